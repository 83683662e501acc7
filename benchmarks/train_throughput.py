"""Training throughput: mnist_tf with its default flags vs Keras `model.fit`, default and tuned.

    python benchmarks/train_throughput.py --hidden_sizes=256,128 --batch_size=128

Measures, in one process, on the same 784-H...-10 MLP, batch size and data:

- mnist_tf with default flags: a `TrainConfig` with only the architecture,
  batch (and --dropout/--precision/--device) set, run by the trainer's own
  pieces: `TrainState`, and the runner `trainer.make_runner` picks for that
  config over the one step body, driven through whole epochs in calls of the
  runner's `steps_per_call` steps, planned and cut as the trainer's loop does
  (`trainer.next_stop`, with no periodic actions). So
  whatever the defaults choose (tf.data or data on device, XLA or not, steps
  per call) is what is measured. --pipeline, --jit_compile and
  --steps_per_call override single defaults;
- Keras `model.fit` with its defaults (`jit_compile="auto"`, which Keras
  resolves to off on a CPU-only machine; one step per execution);
- Keras tuned: `jit_compile=True` and `steps_per_execution` = mnist_tf's
  steps per call (a comparison with the peer at its best, not only at its
  defaults);
- two matmul references: the machine's large float32 matmul (n^3, --matmul_size)
  and the step's own matmul shapes timed alone (below), each the better of
  TensorFlow's kernel and XLA's.

Each trainer's figure is examples/s, the median over --repeats epochs after one
burn-in epoch (tracing, XLA compilation, first-touch allocations), with the
clock read after a host synchronisation (a variable read). All three train
on the same examples: the first --examples training images, cut to whole
batches, uint8 for mnist_tf (its pipeline normalises them), `x / 255` float32
for Keras.

Step FLOPs are counted exactly from the layer sizes; per layer of `i` inputs
and `o` outputs at batch B: the forward matmul x[B,i]·W[i,o], the weight
gradient xᵀ[i,B]·dy[B,o] and, for every layer but the first (whose input needs
no gradient), the input gradient dy[B,o]·Wᵀ[o,i]: 2·m·n·k FLOPs each. Bias
adds, ReLUs, softmax and Adam's element-wise updates are left out (under 1 %
here), so the step's FLOP/s is a slight undercount. "The step's matmuls
alone" times exactly that set of matmuls, with nothing else, in one traced
function: its rate is what the step's arithmetic could reach at this batch
size, and its examples/s the ceiling of any trainer of this model.

Prints a table, then one JSON line with every figure (also written to --output).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from absl import flags, logging  # noqa: E402

from mnist_tf import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("hidden_sizes", "256,128", "Hidden layer widths.")
flags.DEFINE_integer("batch_size", 128, "Batch size (every trainer).")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
                  "Compute precision of every trainer (mnist_tf's --precision; Keras' "
                  "mixed-precision policy of the same name).")
flags.DEFINE_string("device", "auto", "auto | cpu | gpu | gpu:N, as mnist_tf.train's --device.")
flags.DEFINE_float("dropout", 0.0, "Dropout rate of the hidden layers (every trainer).")
flags.DEFINE_enum("pipeline", "default", ["default", "tfdata", "device"],
                  "Overrides mnist_tf's input path: tfdata (--nodata_on_device: tf.data "
                  "streams each call's batch indices) or device (--data_on_device: the "
                  "order built as a tensor). default: the trainer's default.")
flags.DEFINE_boolean("jit_compile", None,
                     "Overrides mnist_tf's --jit_compile (unset: the trainer's default).")
flags.DEFINE_integer("steps_per_call", None,
                     "Overrides mnist_tf's --steps_per_call (unset: the trainer's default). "
                     "Keras tuned uses the same number as steps_per_execution.")
flags.DEFINE_integer("repeats", 3, "Timed epochs after the burn-in epoch (medians reported).")
flags.DEFINE_integer("examples", 60000, "Examples per epoch (cut to whole batches).")
flags.DEFINE_boolean("keras", True, "Also measure Keras model.fit, default and tuned.")
flags.DEFINE_boolean("jax", None, "Also measure the JAX reference (benchmarks/jax_reference.py, "
                     "in a subprocess); unset: when JAX is installed "
                     "(pip install -e \".[bench]\").")
flags.DEFINE_integer("rounds", 1, "Rounds of mnist_tf then JAX, interleaved so that a machine "
                     "slowing down or speeding up hits both; each figure is the median over "
                     "the rounds' medians.")
flags.DEFINE_string("data_dir", None, "TFDS data dir with prepared MNIST (else random data).")
flags.DEFINE_string("output", None, "Also write the JSON line to this file.")
flags.DEFINE_integer("matmul_size", 2048, "n of the n x n x n reference matmul.")


def step_matmuls(hidden_sizes, batch_size: int) -> list[tuple[str, int, int, int]]:
    """The matmuls of one training step: (kind, m, k, n) for an [m, k]·[k, n] product.

    Per layer: forward x·W, weight gradient xᵀ·dy and, except for the first
    layer, input gradient dy·Wᵀ (see the module docstring).
    """
    sizes = [784, *hidden_sizes, 10]
    shapes = []
    for layer, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes.append(("forward", batch_size, i, o))
        shapes.append(("weight_gradient", i, batch_size, o))
        if layer:
            shapes.append(("input_gradient", batch_size, o, i))
    return shapes


def step_flops(hidden_sizes, batch_size: int) -> int:
    """Exact matmul FLOPs of one training step: 2·m·k·n summed over `step_matmuls`."""
    return sum(2 * m * k * n for _, m, k, n in step_matmuls(hidden_sizes, batch_size))


def step_matmuls_gflops(hidden_sizes, batch_size: int, jit_compile: bool,
                        repeats: int = 5) -> float:
    """GFLOP/s of the step's matmuls alone, all in one traced call (median over repeats).

    Each call computes `sets` independent copies of the step's matmuls (their
    own activations and output gradients, shared weights, as consecutive
    steps see them), enough for ~2 GFLOP per call so per-call overhead
    vanishes; the products are returned, so none is pruned, and the clock is
    read after `.numpy()` on a value that depends on every one of them.
    """
    import tensorflow as tf

    sizes = [784, *hidden_sizes, 10]
    pairs = list(zip(sizes[:-1], sizes[1:]))
    flops = step_flops(hidden_sizes, batch_size)
    sets = min(16, max(1, round(2e9 / flops)))
    normal = tf.random.Generator.from_seed(0).normal
    weights = [normal([i, o]) for i, o in pairs]
    inputs = [[normal([batch_size, i]) for i, _ in pairs] for _ in range(sets)]
    output_grads = [[normal([batch_size, o]) for _, o in pairs] for _ in range(sets)]

    @tf.function(jit_compile=jit_compile)
    def matmuls(weights, inputs, output_grads):
        products = []
        for xs, dys in zip(inputs, output_grads):
            for layer, (x, w, dy) in enumerate(zip(xs, weights, dys)):
                products.append(tf.matmul(x, w))  # Forward.
                products.append(tf.matmul(x, dy, transpose_a=True))  # Weight gradient.
                if layer:  # The first layer's input needs no gradient.
                    products.append(tf.matmul(dy, w, transpose_b=True))
        # One element of each: reading it waits for every product.
        return products, tf.add_n([p[0, 0] for p in products])

    times = common.seconds_per_call(lambda: matmuls(weights, inputs, output_grads)[1], repeats)
    return common.median_rate(sets * flops, times) / 1e9


def mnist_tf_config(hidden_sizes, batch_size: int):
    """The `TrainConfig` measured: defaults, plus this benchmark's settings and overrides."""
    from mnist_tf.config import TrainConfig

    overrides = {}
    if FLAGS.pipeline != "default":
        overrides["data_on_device"] = FLAGS.pipeline == "device"
    if FLAGS.jit_compile is not None:
        overrides["jit_compile"] = FLAGS.jit_compile
    if FLAGS.steps_per_call is not None:
        overrides["steps_per_call"] = FLAGS.steps_per_call
    config = TrainConfig(hidden_sizes=tuple(hidden_sizes), batch_size=batch_size,
                         dropout=FLAGS.dropout, precision=FLAGS.precision, device=FLAGS.device,
                         **overrides)
    return config, overrides


def measure_keras(images, labels, hidden_sizes, batch_size, repeats, dropout=0.0,
                  precision="float32", jit_compile="auto", steps_per_execution=1):
    """Per-epoch seconds of Keras `model.fit`: (burn-in, [timed...], resolved jit_compile)."""
    import tensorflow as tf

    tf.keras.mixed_precision.set_global_policy(precision)
    tf.keras.utils.set_random_seed(0)
    layers = [tf.keras.Input((784,))]
    for h in hidden_sizes:
        layers.append(tf.keras.layers.Dense(h, activation="relu"))
        if dropout:
            layers.append(tf.keras.layers.Dropout(dropout))
    # float32 logits, as mnist_tf's (and as Keras' mixed-precision guide advises).
    layers += [tf.keras.layers.Dense(10, dtype="float32")]
    model = tf.keras.Sequential(layers)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution)

    class EpochTimer(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.model.optimizer.iterations.numpy()  # Sync, as for mnist_tf.
            self.times.append(time.perf_counter() - self.start)

    timer = EpochTimer()
    model.fit(images, labels, batch_size=batch_size, epochs=repeats + 1, verbose=0,
              shuffle=True, callbacks=[timer])
    tf.keras.mixed_precision.set_global_policy("float32")
    return timer.times[0], timer.times[1:], bool(model.jit_compile)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from mnist_tf.config import parse_hidden_sizes
    from mnist_tf.errors import UserError

    try:
        hidden_sizes = parse_hidden_sizes(FLAGS.hidden_sizes)
        config, overrides = mnist_tf_config(hidden_sizes, FLAGS.batch_size)
    except UserError as e:
        cli.fail(str(e))
    tf = cli.import_tensorflow_quietly(keras=FLAGS.keras)

    from mnist_tf import devices

    try:
        device = devices.resolve(config.device)
    except UserError as e:
        cli.fail(str(e))
    with tf.device(device):
        run(config, overrides, device)


def keras_rows_and_figures(images, labels, config, steps_per_call, ours_rate):
    """Measures Keras default and tuned; returns (rows, JSON figures)."""
    floats = images.reshape(len(images), 784).astype("float32") / 255.0
    rows, figures = [], {}
    variants = {"default": {}, "tuned": {"jit_compile": True,
                                         "steps_per_execution": steps_per_call}}
    for name, settings in variants.items():
        burn_in, times, jit = measure_keras(floats, labels, config.hidden_sizes,
                                            config.batch_size, FLAGS.repeats, config.dropout,
                                            config.precision, **settings)
        rate = common.median_rate(len(labels), times)
        steps_per_execution = settings.get("steps_per_execution", 1)
        figures.update({
            f"keras_{name}_examples_per_second": round(rate, 1),
            f"keras_{name}_epoch_seconds": [round(t, 4) for t in times],
            f"keras_{name}_burn_in_seconds": round(burn_in, 3),
            f"keras_{name}_jit_compile": jit,
            f"keras_{name}_steps_per_execution": steps_per_execution,
            f"speedup_vs_keras_{name}": round(ours_rate / rate, 3),
        })
        rows += [(f"Keras fit ({name})",
                  f"{rate:,.0f} examples/s (jit_compile={jit}"
                  + (" (auto)" if name == "default" else "")
                  + f", steps_per_execution={steps_per_execution}; burn-in {burn_in:.1f} s)")]
    rows += [(f"mnist_tf / Keras {name}", f"{figures[f'speedup_vs_keras_{name}']:.2f}x")
             for name in variants]
    return rows, figures


def measure_jax(npz: str, num: int, config, steps_per_scan) -> dict:
    """The JAX reference on the `num` examples of `npz`, in a process of its own: its figures."""
    import jax_reference

    return jax_reference.run_in_subprocess(
        f"--npz={npz}", f"--hidden_sizes={','.join(map(str, config.hidden_sizes))}",
        f"--batch_size={config.batch_size}", f"--epochs={FLAGS.repeats + 1}",
        f"--examples={num}", f"--steps_per_scan={steps_per_scan}")


def jax_rows_and_figures(rounds: list[dict], ours_rate: float, steps_per_scan: int):
    """Rows and JSON figures of the JAX rounds, against mnist_tf's `ours_rate`."""
    import numpy as np

    rate = float(np.median([r["examples_per_second"] for r in rounds]))
    version = rounds[0]["jax_version"]
    figures = {"jax_examples_per_second": round(rate, 1),
               "jax_round_examples_per_second": [round(r["examples_per_second"], 1)
                                                 for r in rounds],
               "jax_steps_per_scan": steps_per_scan, "jax_version": version,
               "speedup_vs_jax": round(ours_rate / rate, 3)}
    rows = [("JAX (jit + lax.scan, optax Adam)",
             f"{rate:,.0f} examples/s ({steps_per_scan} steps per scan, data on the device, "
             f"donated state; jax {version}; median of {len(rounds)} round(s))"),
            ("mnist_tf / JAX", f"{ours_rate / rate:.2f}x")]
    return rows, figures


def run(config, overrides, device):
    """Measures and reports, on `device`."""
    images, labels, data_kind = common.mnist_arrays(FLAGS.data_dir)
    num = min(FLAGS.examples, len(labels)) // config.batch_size * config.batch_size
    images, labels = images[:num], labels[:num]
    hidden_sizes, batch_size = config.hidden_sizes, config.batch_size
    flops = step_flops(hidden_sizes, batch_size)
    # The references: the better of TensorFlow's kernel and XLA's (see common.matmul_gflops).
    n = FLAGS.matmul_size
    matmul_tf, matmul_xla = common.matmul_gflops(n), common.matmul_gflops(n, jit_compile=True)
    matmul = max(matmul_tf, matmul_xla)
    alone_tf = step_matmuls_gflops(hidden_sizes, batch_size, jit_compile=False)
    alone_xla = step_matmuls_gflops(hidden_sizes, batch_size, jit_compile=True)
    alone = max(alone_tf, alone_xla)
    ceiling = alone * 1e9 / flops * batch_size

    import jax_reference
    import numpy as np

    # The JAX reference is the float32 MLP without dropout: it is measured against
    # that configuration only.
    comparable = config.precision == "float32" and not config.dropout
    use_jax = (jax_reference.available() and comparable) if FLAGS.jax is None else FLAGS.jax
    if use_jax and not comparable:
        cli.fail("--jax: the JAX reference trains in float32 without dropout; drop --precision "
                 "and --dropout, or pass --nojax")
    ours_rates, jax_rounds = [], []
    with tempfile.TemporaryDirectory() as scratch:
        npz = os.path.join(scratch, "train.npz")  # The same examples, for the JAX process.
        if use_jax:
            np.savez(npz, train_images=images, train_labels=labels)
        for _ in range(FLAGS.rounds):  # Interleaved: mnist_tf, then JAX, per round.
            burn_in, times, runner = common.measure_mnist_tf(config, images, labels,
                                                             FLAGS.repeats, device)
            steps_per_call = runner.steps_per_call
            ours_rates.append(common.median_rate(num, times))
            if use_jax:
                # Whole scans within an epoch, as mnist_tf's calls end at the epoch's end.
                steps_per_scan = min(steps_per_call, num // config.batch_size)
                jax_rounds.append(measure_jax(npz, num, config, steps_per_scan))
    ours_rate = float(np.median(ours_rates))
    step_gflops = ours_rate / batch_size * flops / 1e9
    machine = common.machine()
    flags_measured = {"data_on_device": config.data_on_device,
                      "jit_compile": config.jit_compile, "steps_per_call": steps_per_call}
    headline = "default flags" if not overrides else "default flags but " + ", ".join(
        f"{k}={v}" for k, v in overrides.items())
    result = {
        "benchmark": "train_throughput",
        "hidden_sizes": list(hidden_sizes), "batch_size": batch_size,
        "precision": config.precision, "dropout": config.dropout,
        "data": data_kind, "examples_per_epoch": num, "repeats": FLAGS.repeats,
        "tf_device": device,
        "mnist_tf_default_flags": not overrides, "mnist_tf_overrides": overrides,
        "mnist_tf_flags": flags_measured, "mnist_tf_runner": type(runner).__name__,
        "examples_per_second": round(ours_rate, 1),
        "round_examples_per_second": [round(r, 1) for r in ours_rates],
        "epoch_seconds": [round(t, 4) for t in times],
        "burn_in_seconds": round(burn_in, 3),
        "step_flops": flops,
        "flops_per_example": flops // batch_size,
        "step_gflops": round(step_gflops, 2),
        "matmul_gflops": round(matmul, 2),
        "matmul_gflops_tf_kernel": round(matmul_tf, 2),
        "matmul_gflops_xla": round(matmul_xla, 2),
        "matmul_size": n,
        "fraction_of_matmul_rate": round(step_gflops / matmul, 4),
        "step_matmuls_gflops": round(alone, 2),
        "step_matmuls_gflops_tf_kernel": round(alone_tf, 2),
        "step_matmuls_gflops_xla": round(alone_xla, 2),
        "step_matmuls_examples_per_second": round(ceiling, 1),
        "fraction_of_step_matmuls": round(step_gflops / alone, 4),
        **machine,
    }
    rows = [
        ("cpu", common.describe_cpu(machine)),
        ("device", f"{device} ({machine['device']})"),
        ("model, data", f"784-{'-'.join(map(str, hidden_sizes))}-10 MLP, batch {batch_size}, "
                        f"{config.precision}, dropout {config.dropout}; {data_kind} data, "
                        f"{num:,} examples per epoch"),
        ("step FLOPs", f"{flops / batch_size / 1e6:.3f} MFLOP per example (exact matmul "
                       f"count: {flops // batch_size:,}), {flops / 1e6:,.1f} MFLOP per step"),
        (f"mnist_tf ({headline})",
         f"{ours_rate:,.0f} examples/s ({type(runner).__name__}, "
         + ", ".join(f"{k}={v}" for k, v in flags_measured.items())
         + f"; median of {FLAGS.repeats} epochs, of {FLAGS.rounds} round(s); burn-in "
         f"{burn_in:.1f} s)"),
    ]
    if jax_rounds:
        jax_rows, figures = jax_rows_and_figures(jax_rounds, ours_rate, steps_per_scan)
        rows += jax_rows
        result.update(figures)
    if FLAGS.keras:
        keras_rows, figures = keras_rows_and_figures(images, labels, config, steps_per_call,
                                                ours_rate)
        rows += keras_rows
        result.update(figures)
    rows += [
        (f"matmul {n}^3", f"{matmul:,.1f} GFLOP/s (TF kernel {matmul_tf:,.1f}, XLA "
                          f"{matmul_xla:,.1f}; the better counts)"),
        ("step's matmuls alone", f"{alone:,.1f} GFLOP/s (TF kernel {alone_tf:,.1f}, XLA "
                                 f"{alone_xla:,.1f}) = a ceiling of {ceiling:,.0f} examples/s"),
        ("mnist_tf step rate", f"{step_gflops:,.1f} GFLOP/s = {step_gflops / alone:.1%} of the "
                               f"step's matmuls alone, {step_gflops / matmul:.1%} of {n}^3"),
    ]
    if FLAGS.repeats < 3:
        rows.append(("note", f"--repeats={FLAGS.repeats}: fewer than 3 epochs timed, a smoke "
                             "run, not a figure to quote"))
    common.report("Training throughput", rows, result, FLAGS.output)


if __name__ == "__main__":
    cli.run(main)
