"""Command line: `python -m mnist_tf.plot --workdir=W` writes the seeds' matplotlib figures.

Two PNGs in the workdir:
  curves.png       training and validation loss and accuracy against epoch
                   (read back from the run's TensorBoard event files);
  predictions.png  a grid of test digits with the model's predictions
                   (wrong ones in red).

matplotlib is an optional extra (`pip install -e ".[plot]"`); without it this
command stops with a one-line message and everything else still works.
"""

from __future__ import annotations

import json
import os

from absl import flags, logging

from mnist_tf import cli
from mnist_tf.errors import UserError

FLAGS = flags.FLAGS
CURVES_FILE = "curves.png"
PREDICTIONS_FILE = "predictions.png"


def define_plot_flags() -> None:
    """Defines the flags of this entry point."""
    flags.DEFINE_string("workdir", None, "A training workdir (python -m mnist_tf.train).")
    flags.DEFINE_string("checkpoint", None, "Checkpoint prefix to use (default: the latest).")
    flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS's).")
    flags.DEFINE_boolean("download", True, "Allow TFDS's own download (see mnist_tf.train).")
    flags.DEFINE_integer("num_digits", 32, "How many test digits predictions.png shows.")


def import_pyplot():
    """Returns matplotlib.pyplot on a file-only backend.

    Raises:
        UserError: if matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        raise UserError("plotting needs matplotlib, which is not installed; "
                        "install it with: pip install -e \".[plot]\"") from None
    matplotlib.use("Agg")  # No display: render straight to files.
    import matplotlib.pyplot as plt

    return plt


def read_scalars(summary_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Reads every scalar of one TensorBoard run: tag -> [(step, value), ...] by step."""
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator

    if not os.path.isdir(summary_dir):
        return {}
    accumulator = event_accumulator.EventAccumulator(
        summary_dir, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    series = {}
    for tag in accumulator.Tags()["tensors"]:
        points = []
        for event in accumulator.Tensors(tag):
            value = tf.make_ndarray(event.tensor_proto)
            if value.ndim == 0:  # Scalars only; images and histograms are not curves.
                points.append((event.step, float(value)))
        if points:
            series[tag] = sorted(points)
    return series


def _steps_per_epoch(workdir: str) -> int | None:
    path = os.path.join(workdir, "results.json")
    try:
        with open(path) as f:
            return int(json.load(f)["steps_per_epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def plot_curves(workdir: str, path: str) -> str:
    """Writes loss and accuracy against epoch for the train and validation runs.

    Returns:
        The path written.

    Raises:
        UserError: if the workdir has no training summaries.
    """
    plt = import_pyplot()
    from mnist_tf.training.summaries import SUMMARY_SUBDIR

    runs = {split: read_scalars(os.path.join(workdir, SUMMARY_SUBDIR, split))
            for split in ("train", "validation")}
    if "loss" not in runs["train"]:
        raise UserError(f"--workdir: {workdir} has no training summaries to plot "
                        f"({os.path.join(workdir, SUMMARY_SUBDIR, 'train')})")
    per_epoch = _steps_per_epoch(workdir)
    scale = 1.0 / per_epoch if per_epoch else 1.0
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for split, style in (("train", "-"), ("validation", "o-")):
            points = runs[split].get(metric)
            if points:
                steps, values = zip(*points)
                ax.plot([s * scale for s in steps], values, style, label=split, markersize=4)
        ax.set_xlabel("epoch" if per_epoch else "step")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} ({os.path.basename(os.path.abspath(workdir))})")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_yscale("log")
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
    return path


def plot_predictions(predictions, path: str, num_digits: int = 32) -> str:
    """Writes a grid of the first `num_digits` test digits titled with prediction/truth."""
    plt = import_pyplot()
    count = min(num_digits, len(predictions.labels))
    columns = 8
    rows = -(-count // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.4, rows * 1.6))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= count:
            continue
        predicted, label = int(predictions.predicted[i]), int(predictions.labels[i])
        ax.imshow(predictions.images[i].reshape(28, 28), cmap="gray_r")
        ax.set_title(f"pred {predicted} / true {label}", fontsize=8,
                     color="black" if predicted == label else "red")
    figure.suptitle(f"First {count} test digits: accuracy {predictions.accuracy:.2%} "
                    "on the whole test set")
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
    return path


def _save(figure, path: str) -> None:
    from mnist_tf.files import atomic_path

    with atomic_path(path, suffix=".png") as tmp:  # A crash never leaves half a PNG.
        figure.savefig(tmp, dpi=100)


def plot_workdir(workdir: str, checkpoint: str | None = None, data_dir: str | None = None,
                 allow_download: bool = True, splits=None, num_digits: int = 32,
                 log=print) -> list[str]:
    """Writes curves.png and predictions.png into `workdir`.

    Args:
        workdir: a training workdir.
        checkpoint: checkpoint prefix for the predictions (default: latest).
        data_dir: TFDS data directory for the test digits.
        allow_download: whether TFDS's own download may be tried.
        splits: preprocessed splits to use instead of loading MNIST (tests).
        num_digits: digits in predictions.png.
        log: receives console lines.

    Returns:
        The paths written.
    """
    import_pyplot()  # Fail before any other work if matplotlib is missing.
    from mnist_tf import analysis, inference
    from mnist_tf.data import pipeline, sources

    loaded = inference.load_model(workdir, checkpoint)
    written = [plot_curves(workdir, os.path.join(workdir, CURVES_FILE))]
    if splits is None:
        source = sources.ensure_mnist(data_dir, None, allow_download, log=log)
        splits = pipeline.load_splits(source.data_dir, loaded.config.validation_size)
    predictions = analysis.predict_split(inference.make_predict_fn(loaded.model), splits.test)
    written.append(plot_predictions(predictions, os.path.join(workdir, PREDICTIONS_FILE),
                                    num_digits))
    for path in written:
        log(f"Wrote {path}")
    return written


def main(argv: list[str]) -> None:
    """Validates the flags and writes the plots."""
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    try:
        if not FLAGS.workdir:
            raise UserError("--workdir: required (a training workdir)")
        if FLAGS.num_digits <= 0:
            raise UserError(f"--num_digits: must be positive, got {FLAGS.num_digits}")
        import_pyplot()
        cli.import_tensorflow_quietly()
        plot_workdir(FLAGS.workdir, FLAGS.checkpoint, FLAGS.data_dir, FLAGS.download,
                     num_digits=FLAGS.num_digits)
    except UserError as e:
        cli.fail(str(e))


if __name__ == "__main__":
    define_plot_flags()
    cli.run(main)
