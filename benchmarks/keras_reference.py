"""The seeds' recipe in Keras, trained with `model.fit` until a test-accuracy target.

    python benchmarks/keras_reference.py --target=0.98

What the seed notebooks do: pixels / 255, Flatten, Dense(512, relu),
Dense(256, relu), Dense(10) (the layer sizes of configs/default.cfg), Adam at
1e-3, sparse categorical cross-entropy from logits, `model.fit` with Keras'
default batch size of 32 on all 60,000 training images. A callback measures
the test accuracy every --eval_every_examples training examples and stops fit
once it reaches --target. The data comes from the same prepared TFDS `mnist`
as mnist_tf's (the notebooks' `keras.datasets.mnist.load_data()` needs the
internet).

Run as a child process, so that its time counts from process start, imports
included: by benchmarks/time_to_accuracy.py, and by benchmarks/memory.py
(`--target=0`: all --max_epochs; `--pixels=divide`: `x / 255.0` as the
notebooks write it, a float64 array). Prints one JSON line:
`target_reached_unix_time` (null if never reached), the step and epoch, and
the test accuracy at each evaluation.
"""

from __future__ import annotations

import time

_PROCESS_START = time.time()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import flags, logging  # noqa: E402

from mnist_tf import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_float("target", 0.98, "Test accuracy at which fit stops (0: train all epochs).")
flags.DEFINE_integer("max_epochs", 20, "Give up after this many epochs.")
flags.DEFINE_integer("batch_size", 32, "Keras' default.")
flags.DEFINE_string("hidden_sizes", "512,256", "Hidden layer widths.")
flags.DEFINE_float("dropout", 0.0, "Dropout rate after each hidden layer.")
flags.DEFINE_integer("eval_every_examples", 15000,
                     "Training examples between evaluations (0: at each epoch's end only).")
flags.DEFINE_enum("pixels", "float32", ["float32", "divide"],
                  "How the images are held: float32 (x.astype('float32') / 255) or divide "
                  "(x / 255.0, as the seed notebooks write it: a float64 array).")
flags.DEFINE_integer("seed", 0, "tf.keras.utils.set_random_seed.")
flags.DEFINE_string("data_dir", None, "TFDS data dir with prepared MNIST.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from mnist_tf.config import parse_hidden_sizes

    hidden_sizes = parse_hidden_sizes(FLAGS.hidden_sizes)
    cli.import_tensorflow_quietly(keras=True)
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from mnist_tf.data import pipeline, sources

    data_dir = FLAGS.data_dir or sources.default_data_dir()
    if not sources.is_prepared(data_dir):
        cli.fail(f"--data_dir: no prepared MNIST in {data_dir}; run `python -m mnist_tf.train "
                 f"--data_dir={data_dir} --train_steps=1` once to prepare it")
    # The same decoded-PNG cache mnist_tf reads (mnist_tf.data.pipeline.decoded_arrays), so
    # neither side of the comparison pays a decode the other skips.
    arrays = pipeline.decoded_arrays(tfds.builder("mnist", data_dir=data_dir))
    (train_images, y_train), (test_images, y_test) = arrays["train"], arrays["test"]
    if FLAGS.pixels == "divide":
        x_train, x_test = train_images / 255.0, tf.constant(test_images / 255.0)
    else:
        x_train = train_images.astype("float32") / 255.0
        x_test = tf.constant(test_images.astype("float32") / 255.0)

    tf.keras.utils.set_random_seed(FLAGS.seed)
    layers = [tf.keras.Input(x_train.shape[1:]), tf.keras.layers.Flatten()]
    for h in hidden_sizes:
        layers.append(tf.keras.layers.Dense(h, activation="relu"))
        if FLAGS.dropout:
            layers.append(tf.keras.layers.Dropout(FLAGS.dropout))
    layers += [tf.keras.layers.Dense(10)]
    model = tf.keras.Sequential(layers)
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])

    steps_per_epoch = -(-len(y_train) // FLAGS.batch_size)
    every = (max(1, FLAGS.eval_every_examples // FLAGS.batch_size)
             if FLAGS.eval_every_examples else steps_per_epoch)

    class StopAtTarget(tf.keras.callbacks.Callback):
        """Measures test accuracy every `every` batches; stops fit at the target."""

        def __init__(self):
            super().__init__()
            self.step, self.history, self.reached = 0, [], None

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            if self.step % every and self.step % steps_per_epoch:
                return
            predicted = tf.argmax(self.model(x_test, training=False), axis=-1).numpy()
            accuracy = float((predicted == y_test).mean())
            self.history.append({"step": self.step, "test_accuracy": accuracy})
            print(f"step {self.step} (epoch {self.step / steps_per_epoch:.2f}): test accuracy "
                  f"{accuracy:.2%}", flush=True)
            if FLAGS.target and accuracy >= FLAGS.target:
                self.reached = {"step": self.step, "unix_time": time.time()}
                self.model.stop_training = True

    stopper = StopAtTarget()
    model.fit(x_train, y_train, batch_size=FLAGS.batch_size, epochs=FLAGS.max_epochs,
              shuffle=True, verbose=0, callbacks=[stopper])
    reached = stopper.reached
    print(json.dumps({
        "benchmark": "keras_reference", "target": FLAGS.target,
        "hidden_sizes": list(hidden_sizes), "batch_size": FLAGS.batch_size,
        "process_start_unix_time": _PROCESS_START,
        "target_reached_unix_time": reached["unix_time"] if reached else None,
        "target_reached_step": reached["step"] if reached else None,
        "target_reached_epoch": round(reached["step"] / steps_per_epoch, 3) if reached else None,
        "evaluations": stopper.history,
    }))


if __name__ == "__main__":
    cli.run(main)
