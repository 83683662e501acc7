"""Peak resident memory of a training process: mnist_tf.train vs Keras `model.fit`.

    python benchmarks/memory.py --repeats=3

Each repeat runs, one after the other, each in a fresh Python process:

- `python -m mnist_tf.train` with --train_flag (default:
  `--flagfile=configs/default.cfg --epochs=1`) on a fresh workdir;
- Keras `model.fit` (benchmarks/keras_reference.py with `--target=0`) on the
  same model (hidden sizes, dropout), batch size and number of epochs, read
  back from that run's results.json, on the same decoded arrays, held the way
  Keras users hold them: `x / 255.0` as the seed notebooks write it (a float64
  array; --keras_pixels=float32 for `x.astype("float32") / 255`), evaluated on
  the test set at each epoch's end as mnist_tf is;
- the floor both stand on: a process that only imports TensorFlow as the
  entry points do (`cli.import_tensorflow_quietly`: without Keras or JAX,
  which the Keras process then adds above it) and starts its runtime.

Each process's peak resident set size is read from the kernel's accounting
of that child alone (`os.wait4`'s `ru_maxrss`: the high-water mark over the
whole process, imports, data loading, training and evaluation included). The
decoded-image cache is filled before any child starts, so neither pays TFDS's
PNG decoding. The medians over --repeats and their ratio are reported. Prints
a table, then one JSON line (also written to --output).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from absl import flags, logging  # noqa: E402

from mnist_tf import cli  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_multi_string("train_flag", ["--flagfile=configs/default.cfg", "--epochs=1"],
                          "Flags of the mnist_tf.train run (repeatable; relative paths from "
                          "the repository root).")
flags.DEFINE_integer("repeats", 3, "Runs of each (medians reported).")
flags.DEFINE_boolean("keras", True, "Also run Keras model.fit.")
flags.DEFINE_enum("keras_pixels", "divide", ["divide", "float32"],
                  "How the Keras run holds the images: divide (x / 255.0, float64, as the "
                  "seed notebooks) or float32.")
flags.DEFINE_string("data_dir", None, "TFDS data dir (default: TFDS's; prepared if needed).")
flags.DEFINE_string("output", None, "Also write the JSON line to this file.")

# A process that loads TensorFlow and starts its runtime, and nothing else.
FLOOR = ["-c", "from mnist_tf import cli; cli.import_tensorflow_quietly().constant(0).numpy()"]


def run_measured(args: list[str], log_path: str) -> dict:
    """Runs a child Python to its end; returns its peak RSS (MiB) and wall seconds.

    `os.wait4` gives the resource usage of that one child (RUSAGE_CHILDREN
    would hold the largest of all children so far).
    """
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log_path, "w") as log:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # Reaped here, not by Popen.
    if process.returncode != 0:
        cli.fail(f"{' '.join(args[:2])} failed (exit {process.returncode}); see {log_path}")
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    mib = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    return {"peak_rss_mib": round(mib, 1), "seconds": round(seconds, 2)}


def keras_settings(results: dict) -> dict:
    """The Keras run's model, batch and epochs, from a mnist_tf results.json."""
    config = results["flags"]
    return {"hidden_sizes": config["hidden_sizes"], "batch_size": config["batch_size"],
            "dropout": config["dropout"],
            "epochs": max(1, math.ceil(results["global_step"] / results["steps_per_epoch"]))}


def measure_repeat(repeat: int, data_dir: str, scratch: str) -> dict:
    """One repeat: the floor, mnist_tf, and (with --keras) Keras; their peaks."""
    runs = {"floor": run_measured(FLOOR, os.path.join(scratch, f"floor_{repeat}.log"))}
    workdir = os.path.join(scratch, f"mnist_tf_{repeat}")
    runs["mnist_tf"] = run_measured(
        ["-m", "mnist_tf.train", *FLAGS.train_flag, f"--workdir={workdir}",
         f"--data_dir={data_dir}", "--nodownload"],
        os.path.join(scratch, f"mnist_tf_{repeat}.log"))
    with open(os.path.join(workdir, "results.json")) as f:
        settings = keras_settings(json.load(f))
    if FLAGS.keras:
        runs["keras"] = run_measured(
            [os.path.join(REPO, "benchmarks", "keras_reference.py"), "--target=0",
             f"--max_epochs={settings['epochs']}", f"--batch_size={settings['batch_size']}",
             f"--hidden_sizes={','.join(map(str, settings['hidden_sizes']))}",
             f"--dropout={settings['dropout']}", "--eval_every_examples=0",
             f"--pixels={FLAGS.keras_pixels}", f"--seed={repeat}", f"--data_dir={data_dir}"],
            os.path.join(scratch, f"keras_{repeat}.log"))
    return {"settings": settings, **runs}


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    cli.import_tensorflow_quietly()
    import tensorflow_datasets as tfds

    from mnist_tf.data import pipeline, sources

    data_dir = sources.ensure_mnist(FLAGS.data_dir, None, True).data_dir
    pipeline.decoded_arrays(tfds.builder("mnist", data_dir=data_dir))  # Fills the cache.
    # Removed at the end; kept (with the children's logs) if a child fails.
    scratch = tempfile.mkdtemp(prefix="memory_")
    repeats = []
    for repeat in range(FLAGS.repeats):
        repeats.append(measure_repeat(repeat, data_dir, scratch))
        print(f"repeat {repeat}: " + ", ".join(
            f"{name} {repeats[-1][name]['peak_rss_mib']:,.0f} MiB"
            for name in ("floor", "mnist_tf", "keras") if name in repeats[-1]), flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    report(repeats)


def report(repeats: list[dict]) -> None:
    """Prints the table and the JSON line."""
    settings = repeats[0]["settings"]
    machine = common.machine()
    result = {"benchmark": "memory", "train_flags": FLAGS.train_flag, "repeats": FLAGS.repeats,
              **{key: settings[key] for key in ("hidden_sizes", "batch_size", "dropout",
                                                "epochs")},
              **machine}
    rows = [("cpu", common.describe_cpu(machine)),
            ("mnist_tf flags", " ".join(FLAGS.train_flag)),
            ("model", f"hidden {settings['hidden_sizes']}, batch {settings['batch_size']}, "
                      f"dropout {settings['dropout']}, {settings['epochs']} epoch(s)")]
    names = {"floor": "floor (TensorFlow imported)", "mnist_tf": "mnist_tf.train",
             "keras": f"Keras model.fit (pixels: {FLAGS.keras_pixels})"}
    for name, label in names.items():
        if name not in repeats[0]:
            continue
        runs = [r[name] for r in repeats]
        median = round(statistics.median(r["peak_rss_mib"] for r in runs), 1)
        result[f"{name}_peak_rss_mib"] = median
        result[f"{name}_runs"] = runs
        rows.append((label, f"peak RSS median {median:,.0f} MiB; runs: " + ", ".join(
            f"{r['peak_rss_mib']:,.0f} MiB ({r['seconds']:.1f} s)" for r in runs)))
    if FLAGS.keras:
        result["keras_pixels"] = FLAGS.keras_pixels
        ratio = result["mnist_tf_peak_rss_mib"] / result["keras_peak_rss_mib"]
        above = [result[f"{name}_peak_rss_mib"] - result["floor_peak_rss_mib"]
                 for name in ("mnist_tf", "keras")]
        result["mnist_tf_over_keras"] = round(ratio, 4)
        result["mnist_tf_over_keras_above_floor"] = round(above[0] / above[1], 4)
        rows.append(("mnist_tf / Keras", f"{ratio:.3f} of Keras' peak; above the floor "
                                         f"{above[0]:,.0f} vs {above[1]:,.0f} MiB "
                                         f"({above[0] / above[1]:.3f})"))
    common.report("Peak resident memory", rows, result, FLAGS.output)


if __name__ == "__main__":
    cli.run(main)
