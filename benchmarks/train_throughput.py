"""Training throughput of mnist_tf's real train step vs Keras `model.fit`, same run.

    python benchmarks/train_throughput.py --hidden_sizes=256,128 --batch_size=128

Measures, in one process: the machine's large float32 matmul rate (the better
of TensorFlow's kernel and XLA's, both timed); this
trainer's steady-state examples/s (tracing and one burn-in epoch excluded,
synchronised before reading the clock, median over repeats); and Keras
`model.fit` on the same architecture, batch size and data. Prints a table,
then one JSON line (also written to --output).

Step FLOPs are counted from the layer sizes: the matmuls of the forward pass
(2·B·in·out per layer), of the weight gradients (the same again) and of the
input gradients (the same again, except for the first layer, whose input needs
no gradient). Bias adds, ReLUs, softmax and Adam's element-wise updates are
left out (under 1% here); the figure is therefore a slight undercount.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import flags, logging  # noqa: E402

from mnist_tf import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("hidden_sizes", "256,128", "Hidden layer widths.")
flags.DEFINE_integer("batch_size", 128, "Batch size (both trainers).")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
                  "Compute precision of both trainers (mnist_tf's --precision; Keras' "
                  "mixed-precision policy of the same name).")
flags.DEFINE_string("device", "auto", "auto | cpu | gpu | gpu:N, as mnist_tf.train's --device.")
flags.DEFINE_float("dropout", 0.0, "Dropout rate of mnist_tf's hidden layers (Keras: same).")
flags.DEFINE_boolean("jit_compile", False, "Compile mnist_tf's step with XLA.")
flags.DEFINE_enum("pipeline", "tfdata", ["tfdata", "device"],
                  "tfdata: the trainer's tf.data pipeline (cache, shuffle, batch, "
                  "prefetch), one step per call; device: the trainer's --data_on_device "
                  "loop (data held as tensors, --steps_per_call steps per call).")
flags.DEFINE_integer("steps_per_call", 50, "Steps per call with --pipeline=device.")
flags.DEFINE_integer("repeats", 3, "Timed epochs (the median is reported).")
flags.DEFINE_integer("examples", 60000, "Examples per epoch.")
flags.DEFINE_boolean("keras", True, "Also measure Keras model.fit (the reference).")
flags.DEFINE_string("data_dir", None, "TFDS data dir with prepared MNIST (else random data).")
flags.DEFINE_string("output", None, "Also write the JSON line to this file.")
flags.DEFINE_integer("matmul_size", 2048, "n of the n x n x n reference matmul.")


def step_flops(hidden_sizes, batch_size: int) -> int:
    """Matmul FLOPs of one training step (see the module docstring)."""
    sizes = [784, *hidden_sizes, 10]
    pairs = list(zip(sizes[:-1], sizes[1:]))
    forward = sum(2 * batch_size * i * o for i, o in pairs)
    weight_grads = forward
    input_grads = sum(2 * batch_size * i * o for i, o in pairs[1:])
    return forward + weight_grads + input_grads


def measure_mnist_tf(images, labels, hidden_sizes, batch_size, jit_compile, pipeline, repeats,
                     steps_per_call=1, dropout=0.0, precision="float32"):
    """Returns the per-epoch seconds of mnist_tf's train step (burn-in epoch excluded)."""
    import tensorflow as tf

    from mnist_tf.config import TrainConfig
    from mnist_tf.data import pipeline as input_pipeline
    from mnist_tf.model.schedules import Constant
    from mnist_tf.training import runners
    from mnist_tf.training.state import TrainState
    from mnist_tf.training.steps import Metrics, make_train_step

    # The trainer's own state, step body and runners (weights seed 0, RNG seed 1).
    state = TrainState(TrainConfig(hidden_sizes=tuple(hidden_sizes), dropout=dropout,
                                   precision=precision, seed=0))
    optimizer = state.optimizer
    num = len(labels) // batch_size * batch_size
    steps = num // batch_size
    uint8_images = (images[:num] * 255).round().astype("uint8").reshape(-1, 28, 28, 1)
    train = input_pipeline.from_arrays(uint8_images, labels[:num])
    train_step = make_train_step(state, Constant(1e-3), Metrics(), batch_size)
    if pipeline == "tfdata":
        runner = runners.BatchRunner(train_step, train, batch_size, seed=0,
                                     jit_compile=jit_compile)
        steps_per_call = 1
    else:
        zeros = [tf.zeros_like(p) for p in state.model.parameters()]
        runner = runners.DeviceLoopRunner(train_step, train, batch_size, 0, zeros,
                                          jit_compile=jit_compile)

    def run_epoch(epoch):
        runner.start_epoch(epoch, 0)
        for first in range(0, steps, steps_per_call):
            runner(first, min(steps_per_call, steps - first), 0)

    times = []
    for epoch in range(repeats + 1):
        start = time.perf_counter()
        run_epoch(epoch)
        optimizer.step.numpy()  # Wait for the last step before reading the clock.
        if epoch > 0:  # Epoch 0 traces, fills the cache and warms up.
            times.append(time.perf_counter() - start)
    return times, num


def measure_keras(images, labels, hidden_sizes, batch_size, repeats, dropout=0.0,
                  precision="float32"):
    """Returns the per-epoch seconds of Keras model.fit (first epoch excluded)."""
    import tensorflow as tf

    tf.keras.mixed_precision.set_global_policy(precision)
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
                  metrics=["accuracy"])

    class EpochTimer(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            # Keras has synchronised by now: it reads the epoch's logs.
            self.times.append(time.perf_counter() - self.start)

    timer = EpochTimer()
    model.fit(images, labels, batch_size=batch_size, epochs=repeats + 1, verbose=0,
              shuffle=True, callbacks=[timer])
    return timer.times[1:], len(labels)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from mnist_tf.config import parse_hidden_sizes

    hidden_sizes = parse_hidden_sizes(FLAGS.hidden_sizes)
    tf = cli.import_tensorflow_quietly()

    from mnist_tf import devices
    from mnist_tf.errors import UserError

    try:
        device = devices.resolve(FLAGS.device)
    except UserError as e:
        cli.fail(str(e))
    with tf.device(device):
        run(hidden_sizes, device)


def run(hidden_sizes, device):
    """Measures and reports, on `device`."""
    import common

    images, labels, data_kind = common.mnist_arrays(FLAGS.data_dir)
    images, labels = images[:FLAGS.examples], labels[:FLAGS.examples]
    # The better of TensorFlow's matmul kernel and XLA's (see common.matmul_gflops).
    n = FLAGS.matmul_size
    matmul_tf, matmul_xla = common.matmul_gflops(n), common.matmul_gflops(n, jit_compile=True)
    matmul = max(matmul_tf, matmul_xla)
    ours, num = measure_mnist_tf(images, labels, hidden_sizes, FLAGS.batch_size,
                                 FLAGS.jit_compile, FLAGS.pipeline, FLAGS.repeats,
                                 FLAGS.steps_per_call, FLAGS.dropout, FLAGS.precision)
    ours_rate = common.median_rate(num, ours)
    flops = step_flops(hidden_sizes, FLAGS.batch_size)
    step_gflops = ours_rate / FLAGS.batch_size * flops / 1e9
    result = {
        "benchmark": "train_throughput",
        "hidden_sizes": list(hidden_sizes), "batch_size": FLAGS.batch_size,
        "precision": FLAGS.precision, "dropout": FLAGS.dropout, "jit_compile": FLAGS.jit_compile,
        "pipeline": FLAGS.pipeline, "steps_per_call": FLAGS.steps_per_call,
        "data": data_kind, "repeats": FLAGS.repeats, "tf_device": device,
        "examples_per_second": round(ours_rate, 1),
        "step_flops": flops,
        "step_gflops": round(step_gflops, 2),
        "matmul_gflops": round(matmul, 2),
        "matmul_gflops_tf_kernel": round(matmul_tf, 2),
        "matmul_gflops_xla": round(matmul_xla, 2),
        "matmul_size": n,
        "fraction_of_matmul_rate": round(step_gflops / matmul, 4),
        **common.machine(),
    }
    rows = [
        ("config", f"hidden {list(hidden_sizes)}, batch {FLAGS.batch_size}, "
                   f"{FLAGS.precision}, dropout {FLAGS.dropout}, jit_compile={FLAGS.jit_compile}, "
                   f"pipeline={FLAGS.pipeline}"
                   + (f" ({FLAGS.steps_per_call} steps/call)" if FLAGS.pipeline == "device"
                      else "") + f", data={data_kind}"),
        ("device", f"{device} ({result['device']})"),
        ("machine fp32 matmul", f"{matmul:,.1f} GFLOP/s ({n}^3, median; TF kernel "
                                f"{matmul_tf:,.1f}, XLA {matmul_xla:,.1f}; the better counts)"),
        ("mnist_tf", f"{ours_rate:,.0f} examples/s (median of {FLAGS.repeats} epochs)"),
        ("mnist_tf step rate", f"{step_gflops:,.1f} GFLOP/s = "
                               f"{step_gflops / matmul:.1%} of the matmul rate"),
    ]
    if FLAGS.keras:
        keras_times, keras_num = measure_keras(images, labels, hidden_sizes, FLAGS.batch_size,
                                               FLAGS.repeats, FLAGS.dropout, FLAGS.precision)
        keras_rate = common.median_rate(keras_num, keras_times)
        result["keras_fit_examples_per_second"] = round(keras_rate, 1)
        result["speedup_vs_keras_fit"] = round(ours_rate / keras_rate, 3)
        rows += [("Keras model.fit", f"{keras_rate:,.0f} examples/s (median of "
                                     f"{FLAGS.repeats} epochs)"),
                 ("speed-up vs Keras", f"{ours_rate / keras_rate:.2f}x")]
    common.report("Training throughput", rows, result, FLAGS.output)


if __name__ == "__main__":
    cli.run(main)
