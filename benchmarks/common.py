"""Shared pieces of the benchmarks: timing, the matmul reference, data, output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np


def cpu() -> dict:
    """The CPU's model name and whether it has AVX2 and AVX-512F (`lscpu`, else /proc/cpuinfo).

    The vector width decides which kernels TensorFlow and XLA pick, so figures
    from CPUs with and without AVX-512 are not comparable.
    """
    fields = {}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    except (OSError, subprocess.CalledProcessError):
        try:
            with open("/proc/cpuinfo") as f:  # Same keys, lower case: "model name", "flags".
                fields = {key.strip().capitalize(): value for key, value in
                          (line.split(":", 1) for line in f if ":" in line)}
        except OSError:
            pass
    flags = set(fields.get("Flags", "").split())
    return {
        "cpu_model": fields.get("Model name", "").strip() or platform.processor() or "unknown",
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
    }


def machine() -> dict:
    """Describes where the figures were taken."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return {
        "device": "GPU: " + ", ".join(g.name for g in gpus) if gpus else "CPU",
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        **cpu(),
        "tensorflow": tf.__version__,
        "python": sys.version.split()[0],
    }


def describe_cpu(machine: dict) -> str:
    """One header line: model, cores, AVX2/AVX-512F, TensorFlow."""
    def yes_no(flag):
        return "yes" if machine[flag] else "no"

    return (f"{machine['cpu_model']} ({machine['cpu_count']} cores); avx2 {yes_no('avx2')}, "
            f"avx512f {yes_no('avx512f')}; TensorFlow {machine['tensorflow']}")


def median_rate(work: float, seconds: list[float]) -> float:
    """Median of work/seconds over repeats (per-repeat rates, then the median)."""
    return statistics.median(work / s for s in seconds)


def seconds_per_call(call, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of `call`, after one untimed call (trace, warm-up).

    `call` returns a tensor; its `.numpy()` is the synchronisation point
    before the clock is read (a GPU runs asynchronously).
    """
    call().numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call().numpy()
        times.append(time.perf_counter() - start)
    return times


def matmul_gflops(
    n: int = 2048, repeats: int = 5, inner: int = 4, jit_compile: bool = False
) -> float:
    """The machine's large float32 matmul rate in GFLOP/s (median over repeats).

    `inner` chained matmuls run per traced call so per-call overhead vanishes;
    `.numpy()` synchronises before the clock is read. `jit_compile` measures
    XLA's matmul instead of TensorFlow's kernel: which is faster depends on
    the CPU (on an AVX2 AMD EPYC, XLA's was faster), so a fair reference
    takes the better of the two.
    """
    import tensorflow as tf

    a = tf.random.stateless_normal([n, n], seed=[1, 2])
    b = tf.random.stateless_normal([n, n], seed=[3, 4]) / np.sqrt(n)

    @tf.function(jit_compile=jit_compile)
    def chain(x):
        for _ in range(inner):
            x = tf.matmul(x, b)
        return tf.reduce_sum(x)

    return median_rate(2.0 * n**3 * inner, seconds_per_call(lambda: chain(a), repeats)) / 1e9


def mnist_arrays(data_dir: str | None = None):
    """Real MNIST train images (uint8 [N, 28, 28, 1], as decoded) and int32 labels, if prepared.

    Falls back to random data of the same shape (throughput does not depend on
    the values) and says so: returns (images, labels, "mnist" or "random").
    """
    from mnist_tf.data import pipeline, sources

    data_dir = data_dir or sources.default_data_dir()
    if sources.is_prepared(data_dir):
        import tensorflow_datasets as tfds

        # The trainer's decoded-PNG cache (decoded once, then read back).
        images, labels = pipeline.decoded_arrays(tfds.builder("mnist", data_dir=data_dir))["train"]
        return images, labels.astype(np.int32), "mnist"
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (60000, 28, 28, 1), dtype=np.uint8),
            rng.integers(0, 10, 60000).astype(np.int32), "random")


def attempt(spawned: float, exited: float, reached: float | None) -> dict:
    """One time-to-target run: the seconds to the target, or, if it was missed, the whole run.

    A run that misses the target is a failure, not a gap: it is counted at
    its full length (process start to exit), so a recipe that fails often
    cannot look fast by dropping its failures.

    Args:
        spawned: unix time the process was started.
        exited: unix time it had exited.
        reached: unix time the target was first reached, or None (missed).

    Returns:
        {"reached": bool, "seconds": float}.
    """
    end = exited if reached is None else reached
    return {"reached": reached is not None, "seconds": round(end - spawned, 3)}


def summarize_attempts(runs: list[dict]) -> dict:
    """Median seconds over all runs (failures at their whole-run time) and the failure count."""
    return {"median_seconds": round(statistics.median(r["seconds"] for r in runs), 3),
            "failures": sum(not r["reached"] for r in runs)}


def report(title: str, rows: list[tuple[str, str]], result: dict, output: str | None) -> None:
    """Prints a readable table, then the result as one JSON line (and to `output`)."""
    width = max(len(name) for name, _ in rows)
    print(title)
    print("-" * len(title))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    line = json.dumps(result, sort_keys=True)
    print(line)
    if output:
        with open(output, "w") as f:
            f.write(line + "\n")


def in_memory_splits(images, labels):
    """The trainer's `Splits` over these arrays (all for training; no validation)."""
    from mnist_tf.data import pipeline

    train = pipeline.from_arrays(images, labels)
    # The runners read only the training split; `test` is never evaluated here.
    return pipeline.Splits(train=train, validation=None, test=train, num_train=len(train),
                           num_validation=0, num_test=len(train))


def measure_mnist_tf(config, images, labels, repeats: int, device: str):
    """Per-epoch seconds of the trainer's runner for `config`: (burn-in, [timed...], runner)."""
    from mnist_tf.model.schedules import make_schedule
    from mnist_tf.training import trainer
    from mnist_tf.training.state import TrainState
    from mnist_tf.training.steps import Metrics

    splits = in_memory_splits(images, labels)
    steps = splits.num_train // config.batch_size
    state = TrainState(config)
    schedule = make_schedule(config.lr_schedule, config.learning_rate, config.warmup_steps,
                             steps * (repeats + 1))
    # The trainer's own choice of runner for this config (no strategy).
    runner = trainer.make_runner(config, state, schedule, Metrics(), splits, None,
                                  device=device)

    # The calls of an epoch, planned as the trainer's loop plans them (`trainer.plan_calls`)
    # with no periodic actions: they end only at the runner's steps_per_call and the epoch's
    # end. The runner is told the plan up front, as in the trainer.
    counts, step = [], 0
    while step < steps:
        stop = trainer.next_stop(step, steps, runner.steps_per_call, [])
        counts.append(stop - step)
        step = stop

    def run_epoch(epoch):
        runner.start_epoch(epoch, 0, counts)
        first = 0
        for count in counts:
            runner(first, count, 0)
            first += count

    times = []
    for epoch in range(repeats + 1):
        start = time.perf_counter()
        run_epoch(epoch)
        state.optimizer.step.numpy()  # Sync: wait for the last step before reading the clock.
        times.append(time.perf_counter() - start)
    return times[0], times[1:], runner
