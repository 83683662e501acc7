"""Command line: `python -m mnist_tf.plot --workdir=W` writes the seeds' matplotlib figures.

Two PNGs in the workdir (or in --output_dir):
  curves.png       training and validation loss and accuracy against epoch
                   (read back from the run's TensorBoard event files);
  predictions.png  a grid of test digits with the model's predictions
                   (wrong ones in red).

With several workdirs (`--workdir=A,B`) their curves are overlaid in one
curves.png in --output_dir, each run named in the legend.

The figures are library functions too: `python -m mnist_tf.train --plot` writes
the same two files, and `python -m mnist_tf.predict --plot_dir` draws each
prediction with `plot_prediction`.

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
    flags.DEFINE_string("workdir", None,
                        "A training workdir (python -m mnist_tf.train), or several separated by "
                        "commas (A,B) to overlay their curves in one curves.png (needs "
                        "--output_dir).")
    flags.DEFINE_string("output_dir", None,
                        "Directory for the PNGs (created if missing). One workdir: default the "
                        "workdir itself (curves.png, predictions.png). Several workdirs: "
                        "required; only their overlaid curves.png is written there.")
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
    """The run's steps per epoch from its results.json; None if it records none (yet).

    Raises:
        UserError: naming the file and the key, if results.json is not JSON or
            its steps_per_epoch is not a positive integer (a hand edit).
    """
    from mnist_tf.workdir import RESULTS_FILE

    path = os.path.join(workdir, RESULTS_FILE)
    try:
        with open(path) as f:
            results = json.load(f)
    except OSError:  # None yet: the run is still training.
        return None
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e}); restore it, or delete it to plot "
                        "against steps") from None
    value = results.get("steps_per_epoch") if isinstance(results, dict) else None
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value
    raise UserError(f"{path}: steps_per_epoch must be a positive integer, got {value!r}; "
                    "restore it, or delete the key to plot against steps")


def parse_workdirs(text: str | None) -> list[str]:
    """Splits --workdir's comma-separated list; each must be an existing directory, once.

    Raises:
        UserError: naming --workdir, for an empty list, a missing directory or a repeat.
    """
    workdirs = [w.strip() for w in (text or "").split(",") if w.strip()]
    if not workdirs:
        raise UserError("--workdir: required (a training workdir, or several as A,B)")
    seen = {}
    for workdir in workdirs:
        if not os.path.isdir(workdir):
            raise UserError(f"--workdir: {workdir} does not exist (or is not a directory); "
                            "give a training workdir")
        real = os.path.realpath(workdir)
        if real in seen:
            raise UserError(f"--workdir: {workdir} is given twice (as {seen[real]} too); "
                            "list each run once")
        seen[real] = workdir
    return workdirs


def run_labels(workdirs: list[str]) -> list[str]:
    """Names each run after its workdir: the directory's name, with parents where names clash.

    E.g. `a/default, b/default, c/small` -> `a/default, b/default, small`.
    """
    parts = [os.path.abspath(w).strip(os.sep).split(os.sep) for w in workdirs]
    depths = [1] * len(parts)
    while True:
        labels = ["/".join(p[-d:]) for p, d in zip(parts, depths)]
        clashing = [i for i, label in enumerate(labels)
                    if labels.count(label) > 1 and depths[i] < len(parts[i])]
        if not clashing:
            return labels
        for i in clashing:
            depths[i] += 1


def _read_curves(workdir: str) -> tuple[dict, int | None]:
    """The run's train and validation scalars, and its steps per epoch (None if unknown)."""
    from mnist_tf.training.summaries import SUMMARY_SUBDIR

    runs = {split: read_scalars(os.path.join(workdir, SUMMARY_SUBDIR, split))
            for split in ("train", "validation")}
    if "loss" not in runs["train"]:
        raise UserError(f"--workdir: {workdir} has no training summaries to plot "
                        f"({os.path.join(workdir, SUMMARY_SUBDIR, 'train')})")
    return runs, _steps_per_epoch(workdir)


def curves_figure(workdirs: str | list[str]):
    """Draws loss and accuracy of one or several runs' train and validation splits.

    With several runs each has its own colour (train solid, validation dashed)
    and the legend names it (`run_labels`). The x axis is epochs when every run
    recorded its steps per epoch, else steps.

    Returns:
        The matplotlib figure (the caller saves and closes it).

    Raises:
        UserError: if a workdir has no training summaries.
    """
    plt = import_pyplot()
    workdirs = [workdirs] if isinstance(workdirs, str) else list(workdirs)
    curves = [_read_curves(w) for w in workdirs]
    several = len(workdirs) > 1
    by_epoch = all(per_epoch for _, per_epoch in curves)
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8) if several else (11, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for i, (label, (runs, per_epoch)) in enumerate(zip(run_labels(workdirs), curves)):
            scale = 1.0 / per_epoch if by_epoch else 1.0
            for split, style in (("train", "-"), ("validation", "o--" if several else "o-")):
                points = runs[split].get(metric)
                if points:
                    steps, values = zip(*points)
                    ax.plot([s * scale for s in steps], values, style, markersize=4,
                            color=colours[i % len(colours)] if several else None,
                            label=f"{label} {split}" if several else split)
        ax.set_xlabel("epoch" if by_epoch else "step")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: {len(workdirs)} runs" if several
                     else f"{metric} ({run_labels(workdirs)[0]})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small" if several else None)
    axes[0].set_yscale("log")
    figure.tight_layout()
    return figure


def plot_curves(workdirs: str | list[str], path: str) -> str:
    """Writes `curves_figure(workdirs)` to `path` (PNG).

    Returns:
        The path written.

    Raises:
        UserError: if a workdir has no training summaries.
    """
    plt = import_pyplot()
    figure = curves_figure(workdirs)
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


def _original_pixels(image):
    """A decoded image file as something imshow draws: (uint8 array, colormap or None)."""
    import numpy as np
    from PIL import Image

    from mnist_tf.data import preprocess

    if image.mode.startswith("I") or image.mode == "F":  # 16-bit and float greys.
        grey, _ = preprocess.greyscale(image)
        image, cmap = Image.fromarray(preprocess.to_uint8(grey), "L"), "gray"
    else:
        image, cmap = image.convert("RGBA"), None
    image.thumbnail((1024, 1024))  # A phone photo is 12 megapixels; the panel needs ~400x400.
    return np.asarray(image), cmap


def _probability_bars(ax, prediction) -> None:
    """The ten class probabilities; the predicted class blue and labelled, the true one red."""
    digit, label = prediction.digit, prediction.label
    bars = ax.bar(range(10), prediction.probabilities, color="#c8c8c8")
    bars[digit].set_color("tab:blue")
    p = prediction.probabilities[digit]
    ax.annotate(f"predicted {digit}\n{p:.2%}", (digit, p), xytext=(0, 4),
                textcoords="offset points", ha="center", va="bottom", color="tab:blue",
                fontweight="bold")
    if label is not None and label != digit:
        q = prediction.probabilities[label]
        bars[label].set_color("tab:red")
        ax.annotate(f"true {label}\n{q:.2%}", (label, q), xytext=(0, 4),
                    textcoords="offset points", ha="center", va="bottom", color="tab:red")
    ax.set_xticks(range(10))
    ax.get_xticklabels()[digit].set_fontweight("bold")
    ax.set_xlim(-0.6, 9.6)
    ax.set_ylim(0, 1.25)  # Room for the annotation above a bar at 1.0.
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlabel("digit")
    ax.set_ylabel("probability")
    ax.set_title("class probabilities (softmax of the logits)")
    ax.grid(axis="y", alpha=0.3)


def prediction_headline(prediction) -> str:
    """The picture's title: input, predicted digit and probability (and the true label)."""
    p = prediction.probabilities[prediction.digit]
    if prediction.file is not None:
        return f"{os.path.basename(prediction.file)}: predicted {prediction.digit} ({p:.2%})"
    verdict = "correct" if prediction.digit == prediction.label else "wrong"
    return (f"test[{prediction.test_index}] (TFDS order): predicted {prediction.digit} "
            f"({p:.2%}), true label {prediction.label} ({verdict})")


def prediction_figure(prediction, original=None):
    """Draws one prediction: the original image, the 28x28 digit the model saw, the probabilities.

    Args:
        prediction: a successful `mnist_tf.predict.Prediction` (its `image` is
            the uint8 [28, 28] digit the model was given).
        original: the decoded image file (a Pillow image), or None for a test
            example, whose stored digit is the original.

    Returns:
        The matplotlib figure, 1200x420 pixels at the 100 dpi it is saved with
        (the caller saves and closes it).
    """
    plt = import_pyplot()
    figure = plt.figure(figsize=(12, 4.2), layout="constrained")
    grid = figure.add_gridspec(1, 3, width_ratios=(1, 1, 1.5))
    ax_original, ax_seen, ax_bars = (figure.add_subplot(grid[0, i]) for i in range(3))
    if original is None:
        ax_original.imshow(prediction.image, cmap="gray", vmin=0, vmax=255,
                           interpolation="nearest")
        ax_original.set_title("as stored in MNIST (used as is)")
    else:
        pixels, cmap = _original_pixels(original)
        ax_original.set_facecolor("#b0b0b0")  # Shows through transparency, dark ink or light.
        ax_original.imshow(pixels, cmap=cmap, vmin=0, vmax=255)
        ax_original.set_title(f"original ({original.width}x{original.height})")
    ax_seen.imshow(prediction.image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax_seen.set_title("as the model saw it (28x28)")
    for ax in (ax_original, ax_seen):
        ax.set_xticks([])
        ax.set_yticks([])
    _probability_bars(ax_bars, prediction)
    figure.suptitle(prediction_headline(prediction), fontsize="x-large")
    return figure


def plot_prediction(prediction, path: str, original=None) -> str:
    """Writes `prediction_figure(prediction, original)` to `path` (PNG, 1200x420).

    Returns:
        The path written.
    """
    plt = import_pyplot()
    figure = prediction_figure(prediction, original)
    _save(figure, path)
    plt.close(figure)
    return path


def _save(figure, path: str) -> None:
    from mnist_tf.files import atomic_path

    try:
        with atomic_path(path, suffix=".png") as tmp:  # A crash never leaves half a PNG.
            figure.savefig(tmp, dpi=100)
    except OSError as e:  # A directory made read-only, a full disk: after the checks.
        raise UserError(f"cannot write {path}: {e.strerror}; write the pictures to a "
                        "directory you can write to") from None


def plot_workdir(workdir: str, checkpoint: str | None = None, data_dir: str | None = None,
                 allow_download: bool = True, splits=None, num_digits: int = 32,
                 log=print, output_dir: str | None = None) -> list[str]:
    """Writes curves.png and predictions.png into `workdir` (or `output_dir`).

    Args:
        workdir: a training workdir.
        checkpoint: checkpoint prefix for the predictions (default: latest).
        data_dir: TFDS data directory for the test digits.
        allow_download: whether TFDS's own download may be tried.
        splits: preprocessed splits to use instead of loading MNIST (tests).
        num_digits: digits in predictions.png.
        log: receives console lines.
        output_dir: where the PNGs go, created if missing (default: `workdir`).

    Returns:
        The paths written.

    Raises:
        UserError: for a missing matplotlib, an unusable workdir, checkpoint or
            output directory, or data problems.
    """
    import_pyplot()  # Fail before any other work if matplotlib is missing.
    from mnist_tf import analysis, inference
    from mnist_tf.data import pipeline, sources

    if not output_dir:
        check_workdir_writable(workdir)
    loaded = inference.load_model(workdir, checkpoint)
    output_dir = make_output_dir(output_dir) if output_dir else workdir
    written = [plot_curves(workdir, os.path.join(output_dir, CURVES_FILE))]
    if splits is None:
        source = sources.ensure_mnist(data_dir, None, allow_download, log=log)
        splits = pipeline.load_splits(source.data_dir, loaded.config.validation_size)
    predictions = analysis.predict_split(inference.make_predict_fn(loaded.model), splits.test)
    written.append(plot_predictions(predictions, os.path.join(output_dir, PREDICTIONS_FILE),
                                    num_digits))
    for path in written:
        log(f"Wrote {path}")
    return written


def plot_runs(workdirs: list[str], output_dir: str, log=print) -> str:
    """Overlays the curves of several runs in `output_dir`/curves.png.

    Args:
        workdirs: training workdirs; the legend names each (`run_labels`).
        output_dir: where curves.png goes, created if missing.
        log: receives the `Wrote PATH` line.

    Returns:
        The path written.

    Raises:
        UserError: for a missing matplotlib, a workdir without training
            summaries or an unusable output directory.
    """
    import_pyplot()
    figure_path = os.path.join(make_output_dir(output_dir), CURVES_FILE)
    plot_curves(workdirs, figure_path)
    log(f"Wrote {figure_path}")
    return figure_path


def check_output_dir(path: str, flag: str = "--output_dir",
                     fix: str = "name a directory you can write to") -> None:
    """Refuses, without creating anything, a directory flag that names a file or a read-only dir.

    Read-only: by permissions or a read-only file system (which binds root too).

    Raises:
        UserError: naming `flag` and the fix (`fix`, for a read-only directory).
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag}: {path} is a file, not a directory; name a directory "
                        "(it is created if missing)")
    if os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag}: {path} is not writable; {fix}")


def check_workdir_writable(workdir: str) -> None:
    """Refuses a read-only workdir as the PNGs' default destination (no --output_dir).

    Raises:
        UserError: naming --workdir and --output_dir as the fix.
    """
    check_output_dir(workdir, "--workdir",
                     "write the pictures to a directory you can write to with --output_dir=DIR")


def make_output_dir(path: str, flag: str = "--output_dir") -> str:
    """Checks (`check_output_dir`) and creates directory `path`; returns its absolute path.

    Raises:
        UserError: naming `flag`, if `path` is a file, unwritable or cannot be created.
    """
    from mnist_tf import files

    check_output_dir(path, flag)
    return files.make_directory(path, flag)


def main(argv: list[str]) -> None:
    """Validates the flags and writes the plots."""
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    try:
        workdirs = parse_workdirs(FLAGS.workdir)
        if FLAGS.num_digits <= 0:
            raise UserError(f"--num_digits: must be positive, got {FLAGS.num_digits}")
        if len(workdirs) > 1 and FLAGS.checkpoint:
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
