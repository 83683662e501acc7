"""Examples/s of mnist_tf's tf.data input pipeline alone (no model).

    python benchmarks/input_pipeline.py --batch_size=128

What it touches: it DELETES the decoded-image cache in the data dir
(DATA_DIR/mnist_tf_decoded/, which training keeps beside TFDS's prepared
mnist) and rebuilds it, to time a cold load; it says so when it does. The
rebuilt cache is the one training writes; if the benchmark is stopped in
between, the next training run decodes the PNGs again (seconds) and writes it.
It also prepares MNIST in the data dir first if it is missing, as training does.
Nothing else is written (the JSON line goes to --output only if asked).

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
flags.DEFINE_string("data_dir", None, "TFDS data dir (default: $TFDS_DATA_DIR, else TFDS's; "
                    "prepared if needed). Its decoded-image cache (mnist_tf_decoded/) is "
                    "deleted and rebuilt, to time a cold load.")
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
            cache = os.path.join(source.data_dir, pipeline.DECODED_CACHE_DIR)
            print(f"Deleting the decoded-image cache {cache} (rebuilt next, as training "
                  "would) to time a cold load", flush=True)
            shutil.rmtree(cache, ignore_errors=True)
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
