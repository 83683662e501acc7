"""Command line: classify digit images (or MNIST test examples) with a trained model.

    python -m mnist_tf.predict --workdir=W [--checkpoint=PATH] [--json] FILE...
    python -m mnist_tf.predict --workdir=W --test_index=N [--data_dir=D] [--nodownload]
    ... [--plot_dir=DIR]

Each FILE is prepared as an MNIST digit (`mnist_tf.data.preprocess`) and classified;
one line per file on stdout. A file that cannot be used is reported on its own
line on stderr, the others are still classified, and the exit status is 2
(bad input, as for every entry point). Usage errors (no input, a bad workdir
or checkpoint, --test_index out of range) are one line on stderr, also with
exit status 2. With --plot_dir, each classified input also gets a picture
(`mnist_tf.figures.prediction_figure`): the original, the 28x28 digit the model saw
and the ten probabilities, as DIR/<file stem>.png or DIR/test_N.png.

The work is done by `mnist_tf.inference.classify` (`run`, `predict_files`,
`predict_test_example`), whose names this module also answers to.
"""

from __future__ import annotations

import sys

from absl import flags, logging

from mnist_tf import cli, plot  # cli sets TF's log level before TF loads.
from mnist_tf import workdir as workdirs

FLAGS = flags.FLAGS
# The flags `--helpshort` lists, and `--help` lists first.
SHORT_HELP = ("workdir", "checkpoint", "test_index", "json", "plot_dir")


def define_predict_flags() -> None:
    """Defines the prediction flags; called only by this entry point."""
    flags.DEFINE_string("workdir", "runs/default",
                        "Training workdir whose model is used (its config.json and checkpoints).")
    cli.define_checkpoint_flag("classify with")
    flags.DEFINE_boolean("json", False,
                         "Print one JSON object per line (file, digit, probabilities, top3; "
                         "a failed file gives file and error) instead of readable lines.")
    flags.DEFINE_integer("test_index", None,
                         "Also classify example N of the TFDS MNIST test split, in TFDS's stored "
                         "order (not keras.datasets.mnist.load_data()'s), and print its label.")
    flags.DEFINE_string("data_dir", None,
                        "TFDS data directory for --test_index (default: $TFDS_DATA_DIR, else "
                        "TFDS's default); prepared as by training if needed.")
    flags.DEFINE_boolean("download", True,
                         "For --test_index without a prepared copy: allow TFDS's own download "
                         "(else the registry mirror, as in training).")
    flags.DEFINE_string("preprocessed_dir", None,
                        "Write each prepared 28x28 digit here as a PNG, NNN-NAME.png with NNN "
                        "the input's position (what the model sees: white ink on black).")
    flags.DEFINE_string("plot_dir", None,
                        "Write a picture per classified input here (created if missing; needs "
                        "matplotlib: pip install -e \".[plot]\"): the original image, the 28x28 "
                        "digit the model saw, enlarged, and a bar chart of the ten probabilities "
                        "with the prediction marked; named after the input, <file stem>.png or "
                        "test_N.png (_2, _3, ... added when two inputs share a name).")
    cli.define_short_help(SHORT_HELP)


# The library's names, for callers of this module.
__getattr__ = cli.forward_to("mnist_tf.inference.classify")

def main(argv: list[str]) -> None:
    """Validates the flags, then classifies the files and/or the test example."""
    logging.set_verbosity(logging.WARNING)
    with cli.one_line_errors():
        from mnist_tf.inference import classify

        # Checked before TensorFlow's start-up: a mistyped path fails at once.
        classify.check_inputs(argv[1:], FLAGS.test_index)
        classify.check_output_dirs(FLAGS.preprocessed_dir, FLAGS.plot_dir)
        workdirs.check_is_directory(FLAGS.workdir)
        cli.import_tensorflow_quietly()
        if FLAGS.plot_dir:
            plot.import_pyplot()  # The entry point draws into files only.
        status = classify.run(
            FLAGS.workdir, argv[1:], checkpoint=FLAGS.checkpoint, test_index=FLAGS.test_index,
            data_dir=FLAGS.data_dir, allow_download=FLAGS.download, as_json=FLAGS.json,
            preprocessed_dir=FLAGS.preprocessed_dir, plot_dir=FLAGS.plot_dir,
        )
    sys.exit(status)


if __name__ == "__main__":
    define_predict_flags()
    cli.run(main)
