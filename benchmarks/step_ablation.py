"""What each extra of the train step costs: the step timed with one piece changed at a time.

    python benchmarks/step_ablation.py --hidden_sizes=256,128 --batch_size=128

In one process, on the same examples, interleaved over --rounds (each figure
the median over the rounds of the median epoch after a burn-in), the trainer's
own runner (`common.measure_mnist_tf`) with default flags and:

- `guard=every`: the non-finite guard reading every gradient each step;
- `guard=biases`: reading the bias gradients only (what the trainer does
  where that suffices, `steps.guarded_gradients`);
- `guard=none`: no guard at all (the floor the guard is measured against);
- each of those on the default tf.data path and with `--data_on_device`.

The guard variants replace `steps.guarded_gradients` for the duration of a
measurement and nothing else; the step's arithmetic is the same (the guard
only decides whether a step diverged), so every variant trains alike. Prints
a table, then one JSON line.
"""

from __future__ import annotations

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from absl import flags, logging  # noqa: E402

from mnist_tf import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("hidden_sizes", "256,128", "Hidden layer widths.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("repeats", 3, "Timed epochs after the burn-in epoch, per measurement.")
flags.DEFINE_integer("rounds", 2, "Rounds over every variant, interleaved.")
flags.DEFINE_integer("examples", 60000, "Examples per epoch (cut to whole batches).")
flags.DEFINE_string("data_dir", None, "TFDS data dir with prepared MNIST (else random data).")
flags.DEFINE_string("output", None, "Also write the JSON line to this file.")

GUARDS = ("every", "biases", "none")
PATHS = ("tfdata", "device")


def guard(kind: str):
    """The `steps.guarded_gradients` of a variant."""
    from mnist_tf.training import steps

    return {"every": lambda gradients, biases: gradients,
            "biases": steps.guarded_gradients,
            "none": lambda gradients, biases: []}[kind]


def measure(kind: str, path: str, images, labels, hidden_sizes, device: str) -> float:
    """Examples/s of the default-flags runner with guard `kind` on input `path`."""
    from mnist_tf.config import TrainConfig
    from mnist_tf.training import steps

    original = steps.guarded_gradients
    steps.guarded_gradients = guard(kind)
    try:
        config = TrainConfig(hidden_sizes=tuple(hidden_sizes), batch_size=FLAGS.batch_size,
                             data_on_device=path == "device")
        _, times, _ = common.measure_mnist_tf(config, images, labels, FLAGS.repeats, device)
    finally:
        steps.guarded_gradients = original
    return common.median_rate(len(labels), times)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from mnist_tf.config import parse_hidden_sizes
    from mnist_tf.errors import UserError

    try:
        hidden_sizes = parse_hidden_sizes(FLAGS.hidden_sizes)
    except UserError as e:
        cli.fail(str(e))
    cli.import_tensorflow_quietly()
    images, labels, data_kind = common.mnist_arrays(FLAGS.data_dir)
    num = min(FLAGS.examples, len(labels)) // FLAGS.batch_size * FLAGS.batch_size
    images, labels = images[:num], labels[:num]
    rates = {(kind, path): [] for path in PATHS for kind in GUARDS}
    for _ in range(FLAGS.rounds):
        for kind, path in rates:
            rates[kind, path].append(measure(kind, path, images, labels, hidden_sizes, "/CPU:0"))
    medians = {f"{path}_guard_{kind}": round(statistics.median(values), 1)
               for (kind, path), values in rates.items()}
    machine = common.machine()
    rows = [("cpu", common.describe_cpu(machine)),
            ("model, data", f"784-{'-'.join(map(str, hidden_sizes))}-10 MLP, batch "
                            f"{FLAGS.batch_size}; {data_kind} data, {num:,} examples per epoch; "
                            f"medians of {FLAGS.rounds} rounds of {FLAGS.repeats} epochs")]
    for path in PATHS:
        floor = medians[f"{path}_guard_none"]
        rows += [(f"{path}, guard={kind}",
                  f"{medians[f'{path}_guard_{kind}']:,.0f} examples/s "
                  f"({medians[f'{path}_guard_{kind}'] / floor:.1%} of no guard)")
                 for kind in GUARDS]
    common.report("Step ablation", rows, {
        "benchmark": "step_ablation", "hidden_sizes": list(hidden_sizes),
        "batch_size": FLAGS.batch_size, "data": data_kind, "examples_per_epoch": num,
        "rounds": FLAGS.rounds, "repeats": FLAGS.repeats, "examples_per_second": medians,
        **machine}, FLAGS.output)


if __name__ == "__main__":
    cli.run(main)
