"""Evaluate a checkpoint: `python -m mnist_tf.evaluate --workdir=W [--split=test|validation]`.

`--tflite=PATH` evaluates an exported .tflite file instead (with LiteRT, and
printing only: no files are written).

The entry point: flags, parse, one call to
`mnist_tf.inference.evaluate.evaluate_checkpoint`, print its report. The
library is imported after parsing, so bad flags are rejected before
TensorFlow loads.
"""

from __future__ import annotations

from absl import flags, logging

from mnist_tf import cli
from mnist_tf.choices import SPLITS

FLAGS = flags.FLAGS
# The flags `--helpshort` lists, and `--help` lists first.
SHORT_HELP = ("workdir", "split", "checkpoint", "tflite", "data_dir")


def define_evaluate_flags() -> None:
    """Defines the evaluation flags; called only by this entry point."""
    flags.DEFINE_string("workdir", None, "Training workdir to evaluate (required).")
    cli.define_checkpoint_flag("evaluate")
    flags.DEFINE_enum("split", "test", SPLITS,
                      "Split to evaluate; validation is carved as the training run did.")
    flags.DEFINE_string("tflite", None,
                        "Evaluate this exported .tflite file (or the --export_dir holding "
                        "it) with LiteRT instead of a workdir's checkpoint.")
    cli.define_data_flags()
    flags.register_multi_flags_validator(
        ["workdir", "tflite"], lambda values: (values["workdir"] is None) != (
            values["tflite"] is None),
        message="--workdir must have a value (the run to evaluate), or --tflite=PATH "
                "instead of it to evaluate an exported file; not both")
    cli.define_short_help(SHORT_HELP)


def main(argv: list[str]) -> None:
    """Evaluates the checkpoint and prints the report."""
    # absl's INFO/WARNING lines (TF's checkpoint internals, e.g. the "unrestored
    # values" warnings after a refused restore) would bury the one-line error.
    logging.set_verbosity(logging.ERROR)
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    import matplotlib  # Here, not at import: --help needs no matplotlib.

    matplotlib.use("Agg")  # Only entry points pick a backend: this one writes files.
    cli.import_tensorflow_quietly()  # Before the library: it loads TensorFlow.
    if FLAGS.tflite is not None:
        _evaluate_tflite()
        return
    from mnist_tf.inference.evaluate import evaluate_checkpoint, format_report

    with cli.one_line_errors("interrupted; files already written are complete (each is "
                             "written atomically)"):
        results = evaluate_checkpoint(
            FLAGS.workdir, FLAGS.split, checkpoint=FLAGS.checkpoint, data_dir=FLAGS.data_dir,
            manual_dir=FLAGS.manual_dir, allow_download=FLAGS.download,
        )
    print(format_report(results))
    written = results["files"]
    print(f"\nWrote {written['results']}, {written['confusion_matrix_png']} and the "
          f"TensorBoard image in {written['summaries']}")


def _evaluate_tflite() -> None:
    """Evaluates the --tflite file and prints its report."""
    if FLAGS["checkpoint"].present:
        cli.fail("--checkpoint: a --tflite file holds its weights; give one or the other")
    from mnist_tf.inference.tflite import evaluate_tflite, format_tflite_report

    with cli.one_line_errors("interrupted; nothing was written"):
        results = evaluate_tflite(FLAGS.tflite, FLAGS.split, data_dir=FLAGS.data_dir,
                                  manual_dir=FLAGS.manual_dir, allow_download=FLAGS.download)
    print(format_tflite_report(results))


# The library's names, for callers of this module.
__getattr__ = cli.forward_to("mnist_tf.inference.evaluate")


if __name__ == "__main__":
    define_evaluate_flags()
    cli.run(main)
