"""Shared pieces of the benchmarks: timing, the matmul reference, data, output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

import numpy as np


def machine() -> dict:
    """Describes where the figures were taken."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return {
        "device": "GPU: " + ", ".join(g.name for g in gpus) if gpus else "CPU",
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "tensorflow": tf.__version__,
        "python": sys.version.split()[0],
    }


def median_rate(work: float, seconds: list[float]) -> float:
    """Median of work/seconds over repeats (per-repeat rates, then the median)."""
    return statistics.median(work / s for s in seconds)


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

    chain(a).numpy()  # Trace and warm up.
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        chain(a).numpy()
        times.append(time.perf_counter() - start)
    return median_rate(2.0 * n**3 * inner, times) / 1e9


def mnist_arrays(data_dir: str | None = None):
    """Real MNIST train images (float32 [N, 784] in [0, 1]) and labels, if prepared.

    Falls back to random data of the same shape (throughput does not depend on
    the values) and says so.
    """
    from mnist_tf.data import pipeline, sources

    data_dir = data_dir or sources.default_data_dir()
    if sources.is_prepared(data_dir):
        import tensorflow_datasets as tfds

        # The trainer's decoded-PNG cache (decoded once, then read back).
        images, labels = pipeline.decoded_arrays(tfds.builder("mnist", data_dir=data_dir))["train"]
        return (images.reshape(-1, 784).astype(np.float32) / 255.0, labels.astype(np.int32),
                "mnist")
    rng = np.random.default_rng(0)
    return (rng.random((60000, 784), dtype=np.float32),
            rng.integers(0, 10, 60000).astype(np.int32), "random")


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
