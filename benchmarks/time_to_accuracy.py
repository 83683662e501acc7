"""Wall seconds from process start to a test accuracy, mnist_tf vs Keras `model.fit`.

    python benchmarks/time_to_accuracy.py --target=0.98

Each repeat starts two fresh Python processes, one after the other, and
clocks each from the moment it is spawned (interpreter start, imports, data
loading, tracing and XLA compilation all count) to the moment its test
accuracy first reaches --target:

- mnist_tf: `python -m mnist_tf.train --flagfile=configs/fast.cfg
  --stop_at_test_accuracy=TARGET --eval_every_steps=...`, which records the
  time in results.json (`target_reached`);
- Keras: benchmarks/keras_reference.py, the seeds' recipe (512-256, Adam 1e-3,
  batch 32) under `model.fit`, stopped by a callback;
- JAX (when installed, `pip install -e ".[bench]"`): benchmarks/jax_reference.py
  with fast.cfg's recipe (512-256, batch 128, Adam 3e-3 with 100 warmup steps
  and a cosine decay over 2 epochs), `jax.jit` of `lax.scan`s of up to 50 steps,
  the data on the device. At its best: its data is read from an npz written
  before any clock starts, so it pays neither TensorFlow's import nor TFDS's
  reader.

Both evaluate on the full 10,000-image test set every --eval_every_examples
training examples (and mnist_tf also at each epoch's end), so neither is
favoured by a finer check. Repeat r uses seed r for both. The data is
prepared before any clock starts.

A run that ends without reaching the target is a failure, not a gap: it is
shown as such, and its time is the whole run, from process start to exit
(`common.attempt`), so the median (over every run, `common.summarize_attempts`)
cannot flatter a recipe that often misses. Prints a table, then one JSON line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import jax_reference  # noqa: E402
from absl import flags, logging  # noqa: E402

from mnist_tf import cli  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_float("target", 0.98, "Test accuracy to reach.")
flags.DEFINE_string("config", os.path.join(REPO, "configs", "fast.cfg"),
                    "mnist_tf's recipe (a flagfile).")
flags.DEFINE_integer("repeats", 3, "Runs of each (seed 0, 1, ...); medians are reported.")
flags.DEFINE_integer("eval_every_examples", 15000,
                     "Training examples between test evaluations, for both.")
flags.DEFINE_boolean("keras", True, "Also run the Keras reference.")
flags.DEFINE_boolean("jax", None, "Also run the JAX recipe; unset: when JAX is installed.")
flags.DEFINE_integer("keras_max_epochs", 20, "Keras gives up after this many epochs.")
flags.DEFINE_string("keras_hidden_sizes", "512,256", "The Keras reference's hidden layers.")
flags.DEFINE_multi_string("extra_flag", [], "Extra flag for mnist_tf's run (repeatable).")
flags.DEFINE_string("data_dir", None, "TFDS data dir (default: TFDS's; prepared if needed).")
flags.DEFINE_string("output", None, "Also write the JSON line to this file.")


def flagfile_value(path: str, name: str, default: str) -> str:
    """The last `--name=value` in a flagfile, or `default`."""
    value = default
    with open(path) as f:
        for line in f:
            match = re.fullmatch(rf"--{name}=(\S+)", line.strip())
            if match:
                value = match.group(1)
    return value


def run_child(args: list[str], log_path: str
              ) -> tuple[float, float, subprocess.CompletedProcess]:
    """Runs a child Python; returns its spawn and exit times (unix) and the completed process."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    spawned = time.time()
    result = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                            text=True)
    exited = time.time()
    with open(log_path, "w") as f:
        f.write(result.stdout + result.stderr)
    if result.returncode != 0:
        cli.fail(f"{args[0]} {args[1] if len(args) > 1 else ''} failed (exit "
                 f"{result.returncode}); see {log_path}")
    return spawned, exited, result


def time_mnist_tf(seed: int, data_dir: str, eval_every_steps: int, scratch: str) -> dict:
    """One mnist_tf run to the target; returns its seconds and step (None: missed)."""
    workdir = os.path.join(scratch, f"mnist_tf_{seed}")
    spawned, exited, _ = run_child(
        ["-m", "mnist_tf.train", f"--flagfile={FLAGS.config}", f"--workdir={workdir}",
         f"--data_dir={data_dir}", f"--seed={seed}", f"--stop_at_test_accuracy={FLAGS.target}",
         f"--eval_every_steps={eval_every_steps}", "--nodownload", *FLAGS.extra_flag],
        os.path.join(scratch, f"mnist_tf_{seed}.log"))
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    reached = results["target_reached"]
    return {
        "seed": seed,
        **common.attempt(spawned, exited, reached["unix_time"] if reached else None),
        "step": reached["step"] if reached else None,
        "epoch": round(reached["step"] / results["steps_per_epoch"], 3) if reached else None,
        "final_test_accuracy": results["test_accuracy"],
    }


def time_keras(seed: int, data_dir: str, scratch: str) -> dict:
    """One Keras reference run to the target; returns its seconds and step (None: missed)."""
    return time_reference(seed, "keras_reference.py", [
        f"--data_dir={data_dir}", f"--max_epochs={FLAGS.keras_max_epochs}",
        f"--hidden_sizes={FLAGS.keras_hidden_sizes}",
        f"--eval_every_examples={FLAGS.eval_every_examples}"], scratch)


def time_jax(seed: int, npz: str, eval_every_steps: int, scratch: str) -> dict:
    """One JAX recipe run to the target; returns its seconds and step (None: missed)."""
    config = FLAGS.config
    return time_reference(seed, "jax_reference.py", [
        f"--npz={npz}", f"--eval_every_steps={eval_every_steps}",
        f"--hidden_sizes={flagfile_value(config, 'hidden_sizes', '512,256')}",
        f"--batch_size={flagfile_value(config, 'batch_size', '128')}",
        f"--epochs={flagfile_value(config, 'epochs', '2')}",
        f"--learning_rate={flagfile_value(config, 'learning_rate', '3e-3')}",
        f"--warmup_steps={flagfile_value(config, 'warmup_steps', '100')}", "--json"], scratch)


def time_reference(seed: int, script: str, args: list[str], scratch: str) -> dict:
    """One run of a reference script (benchmarks/`script`) to the target, timed from spawn.

    The script takes --target and --seed and prints one JSON line with
    `target_reached_unix_time` (null if missed), `..._step`, `..._epoch` and
    its `evaluations`; returns its seconds and step (None: missed).
    """
    spawned, exited, result = run_child(
        [os.path.join(REPO, "benchmarks", script), f"--target={FLAGS.target}", f"--seed={seed}",
         *args], os.path.join(scratch, f"{script.split('_')[0]}_{seed}.log"))
    child = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "seed": seed,
        **common.attempt(spawned, exited, child["target_reached_unix_time"]),
        "step": child["target_reached_step"],
        "epoch": child["target_reached_epoch"],
        "evaluations": len(child["evaluations"]),
    }


def write_npz(data_dir: str, path: str) -> None:
    """The prepared MNIST as uint8/int32 arrays, for the JAX recipe."""
    import numpy as np
    import tensorflow_datasets as tfds

    from mnist_tf.data import pipeline

    splits = pipeline.decoded_arrays(tfds.builder("mnist", data_dir=data_dir))
    arrays = {}
    for split in ("train", "test"):
        images, labels = splits[split]
        arrays.update({f"{split}_images": images.reshape(len(images), 28, 28),
                       f"{split}_labels": labels.astype(np.int32)})
    np.savez(path, **arrays)


def describe_runs(runs: list[dict]) -> str:
    """Each run's seconds and epoch, or FAILED with its whole-run seconds."""
    return ", ".join(f"{r['seconds']} s (epoch {r['epoch']})" if r["reached"]
                     else f"FAILED: missed, {r['seconds']} s whole run" for r in runs)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if not os.path.isfile(FLAGS.config):
        cli.fail(f"--config: no such flagfile {FLAGS.config}")
    cli.import_tensorflow_quietly()
    from mnist_tf.data import sources

    # Prepared before any clock starts: neither side pays for the data's
    # first-time preparation.
    data_dir = sources.ensure_mnist(FLAGS.data_dir, None, True).data_dir
    batch_size = int(flagfile_value(FLAGS.config, "batch_size", "128"))
    eval_every_steps = max(1, FLAGS.eval_every_examples // batch_size)
    ours, keras, jax = [], [], []
    # Removed at the end; kept (with the children's logs) if a child fails.
    scratch = tempfile.mkdtemp(prefix="time_to_accuracy_")
    use_jax = jax_reference.available() if FLAGS.jax is None else FLAGS.jax
    if use_jax:
        npz = os.path.join(scratch, "mnist.npz")
        write_npz(data_dir, npz)
    for seed in range(FLAGS.repeats):
        ours.append(time_mnist_tf(seed, data_dir, eval_every_steps, scratch))
        print(f"repeat {seed}: mnist_tf {describe_runs(ours[-1:])}", flush=True)
        if FLAGS.keras:
            keras.append(time_keras(seed, data_dir, scratch))
            print(f"repeat {seed}: Keras model.fit {describe_runs(keras[-1:])}", flush=True)
        if use_jax:
            jax.append(time_jax(seed, npz, eval_every_steps, scratch))
            print(f"repeat {seed}: JAX {describe_runs(jax[-1:])}", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    report(ours, keras, jax)


def report(ours: list[dict], keras: list[dict], jax: list[dict]) -> None:
    """Prints the table and the JSON line."""
    machine = common.machine()
    result = {
        "benchmark": "time_to_accuracy", "target": FLAGS.target,
        "config": os.path.relpath(FLAGS.config, REPO), "extra_flags": FLAGS.extra_flag,
        "eval_every_examples": FLAGS.eval_every_examples, "repeats": FLAGS.repeats,
        "mnist_tf_runs": ours, **machine,
    }
    rows = [
        ("cpu", common.describe_cpu(machine)),
        ("target", f"test accuracy >= {FLAGS.target:.2%}, evaluated every "
                   f"{FLAGS.eval_every_examples:,} training examples; a miss counts as a "
                   "failure at its whole-run time"),
        ("device", result["device"]),
    ]
    sides = [("mnist_tf", "mnist_tf", ours,
              f"{result['config']} {' '.join(FLAGS.extra_flag)}".strip())]
    if FLAGS.keras:
        result["keras_fit_runs"] = keras
        sides.append(("keras_fit", "Keras model.fit", keras,
                      f"{FLAGS.keras_hidden_sizes}, Adam 1e-3, batch 32"))
    if jax:
        result["jax_runs"] = jax
        sides.append(("jax", "JAX (jit + lax.scan)", jax,
                      "fast.cfg's recipe, data from an npz prepared before the clock"))
    for key, name, runs, recipe in sides:
        summary = common.summarize_attempts(runs)
        result[f"{key}_seconds"] = summary["median_seconds"]
        result[f"{key}_failures"] = summary["failures"]
        rows += [(name, recipe),
                 ("  seconds (median)", f"{summary['median_seconds']} from process start, "
                                        f"{summary['failures']} of {len(runs)} failed; runs: "
                                        + describe_runs(runs))]
    if FLAGS.keras:
        ours_median, keras_median = result["mnist_tf_seconds"], result["keras_fit_seconds"]
        result["fraction_of_keras_time"] = round(ours_median / keras_median, 4)
        rows.append(("mnist_tf / Keras", f"{ours_median / keras_median:.3f} "
                                         f"({keras_median / ours_median:.2f}x faster)"))
    if jax:
        ours_median, jax_median = result["mnist_tf_seconds"], result["jax_seconds"]
        result["fraction_of_jax_time"] = round(ours_median / jax_median, 4)
        rows.append(("mnist_tf / JAX", f"{ours_median / jax_median:.3f}"))
    common.report("Time to accuracy", rows, result, FLAGS.output)


if __name__ == "__main__":
    cli.run(main)
