"""Export a trained model as a SavedModel: `python -m mnist_tf.export --workdir=W --export_dir=E`.

What the SavedModel holds, how it is served and how it is written in place
are described once, in `mnist_tf.inference.export`.
"""

from __future__ import annotations

from absl import flags, logging

from mnist_tf import cli, files  # noqa: F401  (files: patched by tests)
from mnist_tf.errors import UserError

FLAGS = flags.FLAGS
# The flags `--helpshort` lists, and `--help` lists first.
SHORT_HELP = ("workdir", "export_dir")


def define_export_flags() -> None:
    """Defines the export flags; called only by this entry point."""
    flags.DEFINE_string("workdir", None, "Training workdir to export from (required).")
    flags.DEFINE_string("export_dir", None,
                        "SavedModel directory to create (required); must not exist or be "
                        "empty.")
    flags.DEFINE_string("checkpoint", None,
                        "Checkpoint prefix to export, e.g. WORKDIR/checkpoints/ckpt-4000 "
                        "(default: the workdir's latest).")
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
    # export_model checks the export directory, then loads TensorFlow quietly.
    from mnist_tf.inference.export import SIGNATURE_KEY, export_model

    try:
        exported = export_model(FLAGS.workdir, FLAGS.export_dir, checkpoint=FLAGS.checkpoint)
    except UserError as e:
        cli.fail(str(e))
    except KeyboardInterrupt:
        cli.fail("interrupted; nothing was exported")
    signature = exported["signature"]
    print(f"Exported {exported['checkpoint']} (step {exported['step']}, hidden sizes "
          f"{exported['hidden_sizes']}, {exported['weights']} weights) to "
          f"{exported['export_dir']}")
    print(f"Signature {signature['name']}: images {signature['inputs']['images']} -> "
          + ", ".join(f"{k} {v}" for k, v in signature["outputs"].items()))
    print(f"Load it with TensorFlow alone: tf.saved_model.load({exported['export_dir']!r})"
          f".signatures[{SIGNATURE_KEY!r}](images=...)")


def __getattr__(name: str):
    """Forwards library names (export_model, SIGNATURE_KEY...); TensorFlow loads on use."""
    from mnist_tf.inference import export as library

    try:
        return getattr(library, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


if __name__ == "__main__":
    define_export_flags()
    cli.run(main)
