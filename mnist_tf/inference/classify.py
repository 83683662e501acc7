"""Classifying image files and MNIST test examples: predictions, their text, JSON and pictures.

The library half of `python -m mnist_tf.predict`: each file is prepared as an
MNIST digit (`mnist_tf.data.preprocess`) and classified; a file that cannot be
used gets its own error and the others are still classified. Nothing here
reads flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import TextIO

import numpy as np

from mnist_tf import files
from mnist_tf.constants import IMAGE_SIZE, NUM_CLASSES
from mnist_tf.data import preprocess
from mnist_tf.errors import DataError, UserError

EXIT_OK = 0
EXIT_SOME_FAILED = 2  # Bad input: the same status as a usage error.
TOP_K = 3


@dataclasses.dataclass(frozen=True, eq=False)
class Prediction:
    """The model's answer for one image file or test example.

    Attributes:
        file: the image file, or None for a test example.
        test_index: the test example's index (TFDS order), or None for a file.
        probabilities: the 10 class probabilities; empty if `error` is set.
        image: the uint8 [28, 28] digit the model saw; None if `error` is set.
        label: the true label of a test example, else None.
        error: why a file could not be classified, else None.
    """

    file: str | None = None
    test_index: int | None = None
    probabilities: tuple[float, ...] = ()
    image: np.ndarray | None = None
    label: int | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        """The file, or `test[N]`."""
        return self.file if self.file is not None else f"test[{self.test_index}]"

    @property
    def digit(self) -> int | None:
        """The predicted digit (argmax), or None on error."""
        if not self.probabilities:
            return None
        return max(range(NUM_CLASSES), key=lambda k: self.probabilities[k])

    def top(self, k: int = TOP_K) -> list[tuple[int, float]]:
        """The `k` most probable (digit, probability) pairs, most probable first."""
        ranked = sorted(range(len(self.probabilities)), key=lambda d: -self.probabilities[d])
        return [(d, self.probabilities[d]) for d in ranked[:k]]


def classify(model, digits) -> list[tuple[float, ...]]:
    """Returns the class probabilities of uint8 digits [N, 28, 28] (N may be 0).

    Args:
        model: an `mnist_tf.model.mlp.MLP` (e.g. `inference.restore.load_model(...).model`).
        digits: uint8 array [N, 28, 28] (a sequence of [28, 28] arrays works too).
    """
    from mnist_tf.inference.predict import predict_in_batches
    from mnist_tf.inference.restore import make_predict_fn

    digits = np.asarray(digits, dtype=np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    if len(digits) == 0:
        return []
    predict_fn = make_predict_fn(model)  # input_signature [None, 784]: one trace.
    probabilities = predict_in_batches(predict_fn, preprocess.to_model_input(digits))
    return [tuple(float(p) for p in row) for row in probabilities.astype(float)]


def as_the_model_sees(model, image: np.ndarray) -> np.ndarray:
    """The uint8 [28, 28] digit the model's first layer gets: `image`, or deskewed (`--deskew`).

    The pictures and the text show this, so a deskewing model's digit is
    drawn upright, as it was classified.
    """
    if not getattr(model, "deskew", False):
        return image
    from mnist_tf.constants import PIXEL_SCALE
    from mnist_tf.model.deskew import deskew

    pixels = deskew(preprocess.to_model_input(image[None])).numpy().reshape(IMAGE_SIZE, IMAGE_SIZE)
    return np.clip(np.rint(pixels * PIXEL_SCALE), 0, 255).astype(np.uint8)


def predict_files(model, paths) -> list[Prediction]:
    """Prepares and classifies image files; files that cannot be used carry an error.

    Args:
        model: an `mnist_tf.model.mlp.MLP`.
        paths: image file paths.

    Returns:
        One `Prediction` per path, in order.
    """
    failed, prepared = [], []  # Both [(position, ...)], so one batch serves all files.
    for i, path in enumerate(paths):
        try:
            prepared.append((i, preprocess.prepare_file(path)))
        except preprocess.ImageError as e:
            failed.append((i, Prediction(file=os.fspath(path), error=e.problem)))
    probabilities = classify(model, [image for _, image in prepared])
    succeeded = [(i, Prediction(file=os.fspath(paths[i]), probabilities=p,
                                image=as_the_model_sees(model, image)))
                 for (i, image), p in zip(prepared, probabilities)]
    return [prediction for _, prediction in sorted(failed + succeeded, key=lambda x: x[0])]


def load_test_example(data_dir: str, index: int):
    """Reads example `index` of the prepared TFDS MNIST test split, in TFDS's stored order.

    TFDS stores MNIST shuffled by example key, so `test[100]` here is not
    `keras.datasets.mnist.load_data()[1][0][100]` (the official file order):
    the official test set starts 7, 2, 1, 0, 4; TFDS's starts 2, 0, 4, 8, 7.

    Returns:
        (uint8 [28, 28] image, int label).

    Raises:
        UserError: if `index` is out of range.
        DataError: if the data cannot be read.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder("mnist", data_dir=data_dir)
        count = builder.info.splits["test"].num_examples
    except Exception as e:  # noqa: BLE001 - TFDS raises many types on bad metadata.
        raise DataError(f"cannot read the prepared mnist in {data_dir}: {e}") from None
    if not 0 <= index < count:
        raise UserError(f"--test_index: {index} is out of range; the test split has {count} "
                        f"examples (0 to {count - 1})")
    try:
        dataset = builder.as_dataset(split=f"test[{index}:{index + 1}]", as_supervised=True,
                                     shuffle_files=False)
        image, label = next(iter(dataset))
    except Exception as e:  # noqa: BLE001 - TFDS/TF raise many types on damaged data.
        raise DataError(f"cannot read test example {index} from {data_dir}: {e}") from None
    return image.numpy().reshape(IMAGE_SIZE, IMAGE_SIZE), int(label)


def predict_test_example(model, data_dir: str, index: int) -> Prediction:
    """Classifies example `index` of the TFDS test split (see `load_test_example`).

    The image is already an MNIST digit: it goes to the model as in training
    (uint8 / 255), without `mnist_tf.data.preprocess`'s steps.
    """
    image, label = load_test_example(data_dir, index)
    (probabilities,) = classify(model, image[None])
    return Prediction(test_index=index, probabilities=probabilities,
                      image=as_the_model_sees(model, image), label=label)


def format_text(prediction: Prediction) -> str:
    """One readable line, e.g. `three.png: 3 | top-3: 3 97.12%, 5 1.80%, 8 0.61%`."""
    if prediction.error is not None:
        return f"{prediction.name}: {prediction.error}"
    top = ", ".join(f"{d} {p:.2%}" for d, p in prediction.top())
    if prediction.label is None:
        return f"{prediction.name}: {prediction.digit} | top-3: {top}"
    verdict = "correct" if prediction.digit == prediction.label else "wrong"
    return (f"{prediction.name} (TFDS order): {prediction.digit}, true label {prediction.label} "
            f"({verdict}) | top-3: {top}")


def format_json(prediction: Prediction, plot: str | None = None) -> str:
    """One JSON object: file or test_index (+ label), digit, probabilities, top3; or error.

    Args:
        prediction: the prediction.
        plot: the picture written for it (`--plot_dir`), added as "plot".
    """
    record = {"file": prediction.file} if prediction.file is not None else {
        "test_index": prediction.test_index, "label": prediction.label}
    if prediction.error is not None:
        record["error"] = prediction.error
    else:
        record["digit"] = prediction.digit
        record["probabilities"] = [round(p, 6) for p in prediction.probabilities]
        record["top3"] = [{"digit": d, "probability": round(p, 6)} for d, p in prediction.top()]
    if plot is not None:
        record["plot"] = plot
    return json.dumps(record)


def plot_names(predictions: list[Prediction]) -> list[str | None]:
    """The picture's file name of each prediction: `<file stem>.png` or `test_N.png`.

    Names are unique: a repeat (`a/3.png` and `b/3.jpg`) gets `_2`, `_3`, ...
    Failed predictions get None (they have no picture).
    """
    names, used = [], set()
    for prediction in predictions:
        if prediction.error is not None:
            names.append(None)
            continue
        stem = (os.path.splitext(os.path.basename(prediction.file))[0]
                if prediction.file is not None else f"test_{prediction.test_index}")
        name, copy = f"{stem}.png", 1
        while name in used:
            copy += 1
            name = f"{stem}_{copy}.png"
        used.add(name)
        names.append(name)
    return names


def write_plots(predictions: list[Prediction], plot_dir: str) -> list[str | None]:
    """Writes each successful prediction's picture into `plot_dir` (see `plot_names`).

    Returns:
        The path written per prediction (None for failed ones), in order.
    """
    from mnist_tf import figures

    paths = []
    for prediction, name in zip(predictions, plot_names(predictions)):
        if name is None:
            paths.append(None)
            continue
        # Read again here: only the 28x28 digit is kept from classification.
        original = preprocess.load_image(prediction.file) if prediction.file else None
        paths.append(figures.plot_prediction(prediction, os.path.join(plot_dir, name), original))
    return paths


def check_output_dirs(preprocessed_dir: str | None, plot_dir: str | None) -> None:
    """Refuses unusable output directories (a file, read-only) before any work is done.

    Also a --plot_dir without matplotlib to draw into it.

    Raises:
        UserError: naming the flag and the fix, or how to install matplotlib.
    """
    from mnist_tf import figures

    if preprocessed_dir:
        figures.check_output_dir(preprocessed_dir, "--preprocessed_dir")
    if plot_dir:
        figures.check_output_dir(plot_dir, "--plot_dir")
        figures.require_matplotlib()


def write_preprocessed(preprocessed_dir: str, index: int, prediction: Prediction) -> str:
    """Writes the digit the model saw as `preprocessed_dir`/NNN-NAME.png (NNN: `index`).

    Returns:
        The path written.

    Raises:
        UserError: naming --preprocessed_dir, if the file cannot be written
            (e.g. the directory became read-only or the disk is full).
    """
    from mnist_tf import images

    stem = (os.path.splitext(os.path.basename(prediction.file))[0]
            if prediction.file is not None else f"test-{prediction.test_index}")
    path = os.path.join(preprocessed_dir, f"{index:03d}-{stem}.png")
    try:
        images.write_png(path, prediction.image)
    except OSError as e:
        raise UserError(f"--preprocessed_dir: cannot write {path}: {e.strerror}; name a "
                        "directory you can write to") from None
    return path


def check_inputs(paths: list[str], test_index: int | None) -> None:
    """Rejects a request with nothing to classify or a negative --test_index.

    Raises:
        UserError: naming the problem.
    """
    if not paths and test_index is None:
        raise UserError("no image files given; usage: python -m mnist_tf.predict "
                        "--workdir=DIR FILE... or --test_index=N")
    if test_index is not None and test_index < 0:
        raise UserError(f"--test_index: must be >= 0, got {test_index}")


def run(
    workdir: str,
    paths: list[str],
    checkpoint: str | None = None,
    test_index: int | None = None,
    data_dir: str | None = None,
    allow_download: bool = True,
    as_json: bool = False,
    preprocessed_dir: str | None = None,
    plot_dir: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Classifies `paths` (and test example `test_index`) and prints the results.

    Args:
        workdir: a training workdir.
        paths: image files.
        checkpoint: a checkpoint prefix; None means the workdir's latest.
        test_index: a TFDS test example to classify too, or None.
        data_dir: TFDS data directory for `test_index` (None: TFDS's default).
        allow_download: whether TFDS's own download may be tried for `test_index`.
        as_json: print JSON lines instead of readable lines.
        preprocessed_dir: if set, write each prepared digit there as a PNG.
        plot_dir: if set, write a picture of each classified input there
            (`write_plots`) and say where: a `Wrote PATH` line each, or a
            "plot" key in the JSON lines.
        out: where results go (default stdout).
        err: where per-file problems go (default stderr), one `error: FILE: problem` each.

    Returns:
        0 if everything was classified, 2 if some files could not be.

    Raises:
        UserError: for usage errors: no input, a bad workdir or checkpoint,
            `test_index` out of range, unusable data or output directory, or
            `plot_dir` without matplotlib.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    check_inputs(paths, test_index)
    check_output_dirs(preprocessed_dir, plot_dir)
    if preprocessed_dir:
        files.make_directory(preprocessed_dir, "--preprocessed_dir")
    if plot_dir:
        plot_dir = files.make_directory(plot_dir, "--plot_dir")

    from mnist_tf.data import sources
    from mnist_tf.inference.restore import load_model

    loaded = load_model(workdir, checkpoint)
    if test_index is not None:
        # Before the files, so that a bad --test_index fails fast. Only say where
        # the data comes from if it has to be prepared first, on `err` so that
        # `out` stays parseable.
        data_dir = data_dir or sources.default_data_dir()
        quiet = sources.is_prepared(data_dir)
        source = sources.ensure_mnist(
            data_dir, allow_download=allow_download,
            log=(lambda _: None) if quiet else (lambda line: print(line, file=err)))
        example = predict_test_example(loaded.model, source.data_dir, test_index)
    predictions = predict_files(loaded.model, paths)
    if test_index is not None:
        predictions.append(example)

    plots = write_plots(predictions, plot_dir) if plot_dir else [None] * len(predictions)
    if not as_json:
        print(f"Model: {loaded.describe()}", file=out)
    for i, (prediction, plot) in enumerate(zip(predictions, plots)):
        if prediction.error is not None:
            print(f"error: {format_text(prediction)}", file=err)
        if as_json:
            print(format_json(prediction, plot), file=out)
        elif prediction.error is None:
            print(format_text(prediction), file=out)
        if preprocessed_dir and prediction.image is not None:
            write_preprocessed(preprocessed_dir, i, prediction)
    if not as_json:
        for plot in filter(None, plots):
            print(f"Wrote {os.path.abspath(plot)}", file=out)
    out.flush()
    return EXIT_SOME_FAILED if any(p.error is not None for p in predictions) else EXIT_OK
