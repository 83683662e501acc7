"""Examples/s of mnist_tf's tf.data input pipeline alone (no model).

    python benchmarks/input_pipeline.py --batch_size=128

Loads the prepared TFDS `mnist` exactly as training does (pipeline.load_splits:
the decoded-array cache, or TFDS's PNG decoding when the cache is cold), then
drains pipeline.train_batches for several epochs, which is what training sees.
Reports the load time with the cache cold (removed first, so TFDS decodes and
the cache is rewritten) and warm, and the steady-state batch rate. Compare
with benchmarks/train_throughput.py: the pipeline must be clearly faster than
the train step, or it is the bottleneck.
"""

from __future__ import annotations

import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import flags, logging  # noqa: E402

from mnist_tf import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("validation_size", 5000, "Examples held out, as in training.")
flags.DEFINE_integer("repeats", 3, "Steady-state epochs timed (the median is reported).")
flags.DEFINE_string("data_dir", None, "TFDS data dir (default: TFDS's; prepared if needed).")
flags.DEFINE_string("output", None, "Also write the JSON line to this file.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    cli.import_tensorflow_quietly()
    import common

    from mnist_tf.data import pipeline, sources

    source = sources.ensure_mnist(FLAGS.data_dir, None, True)
    load_seconds = {}
    for state in ("cold", "warm"):
        if state == "cold":
            shutil.rmtree(os.path.join(source.data_dir, pipeline.DECODED_CACHE_DIR),
                          ignore_errors=True)
        start = time.perf_counter()
        splits = pipeline.load_splits(source.data_dir, FLAGS.validation_size)
        load_seconds[state] = time.perf_counter() - start
    times, counts = [], []
    for epoch in range(FLAGS.repeats + 1):
        start = time.perf_counter()
        count = 0
        for _, labels in pipeline.train_batches(splits.train, FLAGS.batch_size, seed=0,
                                            epoch=epoch):
            count += int(labels.shape[0])
        times.append(time.perf_counter() - start)
        counts.append(count)
    steady = common.median_rate(counts[1], times[1:])
    result = {
        "benchmark": "input_pipeline", "batch_size": FLAGS.batch_size,
        "load_seconds_cold": round(load_seconds["cold"], 3),
        "load_seconds_warm": round(load_seconds["warm"], 3),
        "examples_per_second": round(steady, 1), "repeats": FLAGS.repeats,
        **common.machine(),
    }
    common.report("Input pipeline (tf.data, no model)", [
        ("config", f"batch {FLAGS.batch_size}, {splits.num_train} training examples"),
        ("load, cache cold", f"{load_seconds['cold']:.2f} s (TFDS reads and decodes the PNGs "
                             "of both splits, writes the cache)"),
        ("load, cache warm", f"{load_seconds['warm']:.2f} s"),
        ("steady state", f"{steady:,.0f} examples/s (median of {FLAGS.repeats} epochs)"),
    ], result, FLAGS.output)


if __name__ == "__main__":
    cli.run(main)
