"""Every picture of a run, as objects: matplotlib Figures that Jupyter shows inline.

`curves_figure` (loss and accuracy per epoch), `predictions_figure` (a grid of
test digits) and `prediction_figure` (one digit with its ten probabilities)
return a `matplotlib.figure.Figure` made outside pyplot, so the caller's
backend and pyplot state are left alone. `save_figure` writes one to a PNG;
the `plot_*` helpers are what the command lines use. `confusion_matrix_picture`
is a PIL image drawn by `mnist_tf.images`, which also draws TensorBoard's pictures.

matplotlib is an optional extra (`pip install -e ".[plot]"`); without it these
functions raise a one-line `UserError`.
"""

from __future__ import annotations

import io
import json
import math
import os

from mnist_tf.constants import IMAGE_SIZE, NUM_CLASSES
from mnist_tf.errors import UserError

CURVES_FILE = "curves.png"
PREDICTIONS_FILE = "predictions.png"


def require_matplotlib():
    """Returns the matplotlib module, leaving the caller's backend as it is.

    Raises:
        UserError: if matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        raise UserError("plotting needs matplotlib, which is not installed; "
                        "install it with: pip install -e \".[plot]\"") from None
    return matplotlib


def new_figure(**kwargs):
    """A `matplotlib.figure.Figure` outside pyplot's state: no backend chosen, nothing to close.

    It renders itself to PNG (`_repr_png_`), so Jupyter shows it inline even
    where pyplot, and with it the inline backend's display hook, was never
    imported.
    """
    require_matplotlib()
    from matplotlib.figure import Figure

    class InlineFigure(Figure):
        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=100)
            return buffer.getvalue()

    return InlineFigure(**kwargs)


def confusion_matrix_picture(matrix, title: str | None = None):
    """The confusion-matrix heatmap (`images.confusion_matrix_image`) as a PIL image.

    Rows are true digits, columns predictions; Jupyter shows it inline.
    """
    from mnist_tf import images

    return images.to_pil(images.confusion_matrix_image(matrix, title=title))


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
            for split in ("train", "validation", "test")}
    if "loss" not in runs["train"]:
        raise UserError(f"--workdir: {workdir} has no training summaries to plot "
                        f"({os.path.join(workdir, SUMMARY_SUBDIR, 'train')})")
    return runs, _steps_per_epoch(workdir)


def curves_figure(workdirs: str | list[str]):
    """Draws loss and accuracy of one or several runs' train and held-out splits.

    The held-out line is validation, or test for a run without a validation
    split (test is evaluated every epoch too). Both axes are linear and zoomed
    to where the runs settle (`_settled`): loss from 0, accuracy from just
    below its lowest settled value.

    With several runs each has its own colour (train solid, validation dashed)
    and the legend names it (`run_labels`). The x axis is epochs when every run
    recorded its steps per epoch, else steps.

    Returns:
        The matplotlib figure (the caller saves and closes it).

    Raises:
        UserError: if a workdir has no training summaries.
    """
    workdirs = [workdirs] if isinstance(workdirs, str) else list(workdirs)
    from matplotlib import ticker

    curves = [_read_curves(w) for w in workdirs]
    several = len(workdirs) > 1
    by_epoch = all(per_epoch for _, per_epoch in curves)
    figure = new_figure(figsize=(12, 4.8) if several else (11, 4))
    axes = figure.subplots(1, 2)
    colours = require_matplotlib().rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for i, (label, (runs, per_epoch)) in enumerate(zip(run_labels(workdirs), curves)):
            scale = 1.0 / per_epoch if by_epoch else 1.0
            held_out = "validation" if runs["validation"].get(metric) else "test"
            for split, style in (("train", "-"), (held_out, "o--" if several else "o-")):
                points = runs[split].get(metric)
                if points:
                    steps, values = zip(*points)
                    ax.plot([s * scale for s in steps], values, style, markersize=4,
                            color=colours[i % len(colours)] if several else None,
                            label=f"{label} {split}" if several else split)
        ax.set_xlabel("epoch" if by_epoch else "step")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))  # 1, 2.5
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}: {len(workdirs)} runs" if several
                     else f"{metric} ({run_labels(workdirs)[0]})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small" if several else None)
    _zoom(axes, curves)
    figure.tight_layout()
    return figure


def _settled(runs: dict, metric: str) -> list[float]:
    """The values a zoomed axis must show: held-out points, and training from the first one on.

    Training's first steps (loss above 1, accuracy near chance) are drawn but
    may run off the axis, so the axis resolves where the runs differ. A run
    evaluated once (a short run) has no settled part: all of training is shown.
    """
    held_out = runs["validation"].get(metric) or runs["test"].get(metric) or []
    start = held_out[0][0] if len(held_out) > 1 else 0
    return [v for _, v in held_out] + [v for s, v in runs["train"].get(metric, ()) if s >= start]


def _zoom(axes, curves) -> None:
    """Linear axes on the settled values: loss from 0, accuracy from a round step below them."""
    losses = [v for runs, _ in curves for v in _settled(runs, "loss")]
    if losses:
        axes[0].set_ylim(0.0, max(losses) * 1.1)
    accuracies = [v for runs, _ in curves for v in _settled(runs, "accuracy")]
    if accuracies:
        low = max(0.0, min(accuracies) - 0.02)
        axes[1].set_ylim(math.floor(round(low * 100, 6)) / 100, 1.0 + 0.005)


def plot_curves(workdirs: str | list[str], path: str) -> str:
    """Writes `curves_figure(workdirs)` to `path` (PNG).

    Returns:
        The path written.

    Raises:
        UserError: if a workdir has no training summaries.
    """
    figure = curves_figure(workdirs)
    save_figure(figure, path)
    return path


def predictions_figure(predictions, num_digits: int = 32):
    """Draws a grid of the first `num_digits` test digits titled with prediction/truth.

    Returns:
        The matplotlib figure (wrong predictions titled in red).
    """
    count = min(num_digits, len(predictions.labels))
    columns = 8
    rows = -(-count // columns)
    figure = new_figure(figsize=(columns * 1.4, rows * 1.6))
    axes = figure.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= count:
            continue
        predicted, label = int(predictions.predicted[i]), int(predictions.labels[i])
        ax.imshow(predictions.images[i].reshape(IMAGE_SIZE, IMAGE_SIZE), cmap="gray_r")
        ax.set_title(f"pred {predicted} / true {label}", fontsize=8,
                     color="black" if predicted == label else "red")
    figure.suptitle(f"First {count} test digits: accuracy {predictions.accuracy:.2%} "
                    "on the whole test set")
    figure.tight_layout()
    return figure


def plot_predictions(predictions, path: str, num_digits: int = 32) -> str:
    """Writes `predictions_figure(predictions, num_digits)` to `path` (PNG); returns the path."""
    save_figure(predictions_figure(predictions, num_digits), path)
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
    bars = ax.bar(range(NUM_CLASSES), prediction.probabilities, color="#c8c8c8")
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
    ax.set_xticks(range(NUM_CLASSES))
    ax.get_xticklabels()[digit].set_fontweight("bold")
    ax.set_xlim(-0.6, NUM_CLASSES - 0.4)
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
    figure = new_figure(figsize=(12, 4.2), layout="constrained")
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
    figure = prediction_figure(prediction, original)
    save_figure(figure, path)
    return path


def save_figure(figure, path: str) -> None:
    """Writes `figure` to `path` as a 100 dpi PNG, atomically (never half a file).

    Raises:
        UserError: naming `path`, if it cannot be written.
    """
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
    require_matplotlib()  # Fail before any other work if matplotlib is missing.
    from mnist_tf.data import pipeline, sources
    from mnist_tf.inference import predict, restore

    if not output_dir:
        check_workdir_writable(workdir)
    loaded = restore.load_model(workdir, checkpoint)
    output_dir = make_output_dir(output_dir) if output_dir else workdir
    written = [plot_curves(workdir, os.path.join(output_dir, CURVES_FILE))]
    if splits is None:
        source = sources.ensure_mnist(data_dir, None, allow_download, log=log)
        splits = pipeline.load_splits(source.data_dir, loaded.config.validation_size)
    predictions = predict.predict_split(restore.make_predict_fn(loaded.model), splits.test)
    written.append(plot_predictions(predictions, os.path.join(output_dir, PREDICTIONS_FILE),
                                    num_digits))
    for path in written:
        log(f"Wrote {os.path.abspath(path)}")
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
    require_matplotlib()
    figure_path = os.path.join(make_output_dir(output_dir), CURVES_FILE)
    plot_curves(workdirs, figure_path)
    log(f"Wrote {os.path.abspath(figure_path)}")
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
