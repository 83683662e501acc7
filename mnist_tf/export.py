"""Export a trained model: `python -m mnist_tf.export --workdir=W --export_dir=E [--format=tflite]`.

`--format=saved_model` (the default) writes the SavedModel directory E;
`--format=tflite --quantize=none|float16|dynamic|int8` writes E/model.tflite
and E/mnist_tf.json. What each holds, how it is verified and how it is
written in place are described once, in `mnist_tf.inference.export` and
`mnist_tf.inference.tflite`.
"""

from __future__ import annotations

from absl import flags, logging

from mnist_tf import cli, files  # noqa: F401  (files: patched by tests)
from mnist_tf.choices import FORMATS, QUANTIZE

FLAGS = flags.FLAGS
# The flags `--helpshort` lists, and `--help` lists first.
SHORT_HELP = ("workdir", "export_dir", "format", "quantize")


def define_export_flags() -> None:
    """Defines the export flags; called only by this entry point."""
    flags.DEFINE_string("workdir", None, "Training workdir to export from (required).")
    flags.DEFINE_string("export_dir", None,
                        "Directory to create (required); must not exist or be empty. "
                        "--format=tflite writes EXPORT_DIR/model.tflite in it.")
    flags.DEFINE_enum("format", "saved_model", FORMATS,
                      "saved_model: a TensorFlow SavedModel; tflite: a LiteRT (TensorFlow "
                      "Lite) flatbuffer, verified on the test split before it is kept.")
    flags.DEFINE_enum("quantize", None, QUANTIZE,
                      "With --format=tflite: post-training quantization (default none; int8 "
                      "is full-integer, calibrated on training images).")
    cli.define_checkpoint_flag("export")
    cli.define_data_flags()
    flags.mark_flag_as_required("workdir")
    flags.mark_flag_as_required("export_dir")
    cli.define_short_help(SHORT_HELP)


def main(argv: list[str]) -> None:
    """Exports the checkpoint and says how to load it."""
    # absl's INFO/WARNING lines (TF's checkpoint and SavedModel internals)
    # would bury the output and the one-line errors.
    logging.set_verbosity(logging.ERROR)
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    if FLAGS.format == "tflite":
        _export_tflite()
        return
    if FLAGS.quantize is not None:
        cli.fail(f"--quantize={FLAGS.quantize} needs --format=tflite (a SavedModel is not "
                 "quantized)")
    # export_model checks the export directory, then loads TensorFlow quietly.
    from mnist_tf.inference.export import SIGNATURE_KEY, export_model

    with cli.one_line_errors("interrupted; nothing was exported"):
        exported = export_model(FLAGS.workdir, FLAGS.export_dir, checkpoint=FLAGS.checkpoint)
    signature = exported["signature"]
    print(f"Exported {exported['checkpoint']} (step {exported['step']}, hidden sizes "
          f"{exported['hidden_sizes']}, {exported['weights']} weights) to "
          f"{exported['export_dir']}")
    print(f"Signature {signature['name']}: images {signature['inputs']['images']} -> "
          + ", ".join(f"{k} {v}" for k, v in signature["outputs"].items()))
    print(f"Load it with TensorFlow alone: tf.saved_model.load({exported['export_dir']!r})"
          f".signatures[{SIGNATURE_KEY!r}](images=...)")


def _export_tflite() -> None:
    """Exports, verifies and describes a --format=tflite export."""
    from mnist_tf.inference.tflite import export_tflite, format_tflite_export

    with cli.one_line_errors("interrupted; nothing was exported"):
        exported = export_tflite(
            FLAGS.workdir, FLAGS.export_dir, FLAGS.quantize or "none",
            checkpoint=FLAGS.checkpoint, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir,
            allow_download=FLAGS.download)
    print(format_tflite_export(exported))


# The library's names, for callers of this module.
__getattr__ = cli.forward_to("mnist_tf.inference.export")


if __name__ == "__main__":
    define_export_flags()
    cli.run(main)
