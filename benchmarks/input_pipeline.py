"""Examples/s of mnist_tf's tf.data input pipeline alone (no model).

    python benchmarks/input_pipeline.py --batch_size=128

Reads the prepared TFDS `mnist` exactly as training does (data.load_splits,
then data.train_batches per epoch) and drains the batches: the first epoch
decodes the PNGs and fills the cache, later epochs are what training sees in
steady state. Compare with benchmarks/train_throughput.py: the pipeline must be
clearly faster than the train step, or it is the bottleneck.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags, logging  # noqa: E402

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

    from mnist_tf import data, sources

    source = sources.ensure_mnist(FLAGS.data_dir, None, True)
    splits = data.load_splits(source.data_dir, FLAGS.validation_size)
    times, counts = [], []
    for epoch in range(FLAGS.repeats + 1):
        start = time.perf_counter()
        count = 0
        for _, labels in data.train_batches(splits.train, splits.num_train, FLAGS.batch_size,
                                            seed=0, epoch=epoch):
            count += int(labels.shape[0])
        times.append(time.perf_counter() - start)
        counts.append(count)
    first = counts[0] / times[0]
    steady = common.median_rate(counts[1], times[1:])
    result = {
        "benchmark": "input_pipeline", "batch_size": FLAGS.batch_size,
        "first_epoch_examples_per_second": round(first, 1),
        "examples_per_second": round(steady, 1), "repeats": FLAGS.repeats,
        **common.machine(),
    }
    common.report("Input pipeline (tf.data, no model)", [
        ("config", f"batch {FLAGS.batch_size}, {splits.num_train} training examples"),
        ("first epoch", f"{first:,.0f} examples/s (TFDS read, PNG decode, cache fill)"),
        ("steady state", f"{steady:,.0f} examples/s (median of {FLAGS.repeats} epochs)"),
    ], result, FLAGS.output)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
