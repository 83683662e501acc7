"""Command line: `python -m mnist_tf.plot --workdir=W` writes the seeds' matplotlib figures.

Two PNGs in the workdir (or in --output_dir):
  curves.png       training and validation loss and accuracy against epoch
                   (read back from the run's TensorBoard event files);
  predictions.png  a grid of test digits with the model's predictions
                   (wrong ones in red).

With several workdirs (`--workdir=A,B`) their curves are overlaid in one
curves.png in --output_dir, each run named in the legend.

The figures are library functions in `mnist_tf.figures`, which return
matplotlib Figures for notebooks; this entry point only picks the Agg backend
and writes them.

matplotlib is an optional extra (`pip install -e ".[plot]"`); without it this
command stops with a one-line message and everything else still works.
"""

from __future__ import annotations

from absl import flags, logging

from mnist_tf import cli
from mnist_tf.choices import LATEST
from mnist_tf.errors import UserError
from mnist_tf.figures import (  # noqa: F401  Re-exported for callers of the entry module.
    CURVES_FILE,
    PREDICTIONS_FILE,
    check_output_dir,
    check_workdir_writable,
    curves_figure,
    make_output_dir,
    parse_workdirs,
    plot_curves,
    plot_prediction,
    plot_predictions,
    plot_runs,
    plot_workdir,
    prediction_figure,
    prediction_headline,
    read_scalars,
    require_matplotlib,
    run_labels,
    save_figure,
)

FLAGS = flags.FLAGS
# The flags `--helpshort` lists, and `--help` lists first.
SHORT_HELP = ("workdir", "output_dir", "checkpoint", "num_digits")


def define_plot_flags() -> None:
    """Defines the flags of this entry point."""
    flags.DEFINE_string("workdir", None,
                        "A training workdir (python -m mnist_tf.train), or several separated by "
                        "commas (A,B) to overlay their curves in one curves.png (needs "
                        "--output_dir).")
    flags.DEFINE_string("output_dir", None,
                        "Directory for the PNGs (created if missing). One workdir: default the "
                        "workdir itself (curves.png, predictions.png). Several workdirs: "
                        "required; only their overlaid curves.png is written there.")
    cli.define_checkpoint_flag("draw the predictions with")
    flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS's).")
    flags.DEFINE_boolean("download", True, "Allow TFDS's own download (see mnist_tf.train).")
    flags.DEFINE_integer("num_digits", 32, "How many test digits predictions.png shows.")
    cli.define_short_help(SHORT_HELP)


def import_pyplot():
    """For entry points only: returns matplotlib.pyplot on the file-only Agg backend.

    Raises:
        UserError: if matplotlib is not installed.
    """
    require_matplotlib().use("Agg")  # No display: render straight to files.
    import matplotlib.pyplot as plt

    return plt


def main(argv: list[str]) -> None:
    """Validates the flags and writes the plots."""
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    try:
        workdirs = parse_workdirs(FLAGS.workdir)
        if FLAGS.num_digits <= 0:
            raise UserError(f"--num_digits: must be positive, got {FLAGS.num_digits}")
        if len(workdirs) > 1 and FLAGS.checkpoint != LATEST:
            raise UserError("--checkpoint: names one run's checkpoint; use it with one --workdir")
        if len(workdirs) > 1 and not FLAGS.output_dir:
            raise UserError("--output_dir: required with several --workdir values, for their "
                            "overlaid curves.png (e.g. --output_dir=runs/compare)")
        if FLAGS.output_dir:
            check_output_dir(FLAGS.output_dir)
        else:
            check_workdir_writable(workdirs[0])
        import_pyplot()
        cli.import_tensorflow_quietly()
        if len(workdirs) > 1:
            plot_runs(workdirs, FLAGS.output_dir)
        else:
            plot_workdir(workdirs[0], FLAGS.checkpoint, FLAGS.data_dir, FLAGS.download,
                         num_digits=FLAGS.num_digits, output_dir=FLAGS.output_dir)
    except UserError as e:
        cli.fail(str(e))


if __name__ == "__main__":
    define_plot_flags()
    cli.run(main)
