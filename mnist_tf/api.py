"""The Python API: train, load, predict, evaluate, export from a notebook.

    import mnist_tf

    config = mnist_tf.TrainConfig(hidden_sizes=(128,), epochs=1)
    results = mnist_tf.train_and_evaluate(config, "runs/notebook")  # training.trainer's
    classifier = mnist_tf.load("runs/notebook")
    classifier.predict(uint8_images)["classes"]     # int64 [N]
    classifier.evaluate()["accuracy"]               # as python -m mnist_tf.evaluate
    classifier.export("exports/notebook")           # as python -m mnist_tf.export

Everything goes through the functions the command-line tools use: restoring
through `inference.load_model`, evaluation through `inference.evaluate.evaluate_loaded`,
export through `inference.export.export_loaded`, so a notebook and the command line
report the same numbers and write the same SavedModel. Problems a user can
fix raise `mnist_tf.errors.UserError` (or a subclass) with the command line's
one-line message.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from mnist_tf.constants import IMAGE_SIZE, NUM_PIXELS
from mnist_tf.data import preprocess
from mnist_tf.errors import UserError

if TYPE_CHECKING:  # These load TensorFlow; only their types are needed here.
    from mnist_tf.config import TrainConfig
    from mnist_tf.inference import LoadedModel
    from mnist_tf.model.mlp import MLP

# What an image batch may look like after its leading N (one [28, 28] image is N = 1).
IMAGE_TRAILING_SHAPES = ((IMAGE_SIZE, IMAGE_SIZE), (IMAGE_SIZE, IMAGE_SIZE, 1), (NUM_PIXELS,))
IMAGE_SHAPES = "[N, 28, 28], [N, 28, 28, 1], [N, 784] or one [28, 28] image"
PIXEL_RULE = "uint8 (or integer) pixels 0..255, or floats in [0, 1] (pixels / 255)"


_FLAG = re.compile(r"--(no)?([a-z][a-z0-9_]*)(=)?")


def _as_arguments(message: str) -> str:
    """Rewrites a library message's command-line wording (--name=value) as Python arguments."""
    def one(match: re.Match) -> str:
        no, name, equals = match.groups()
        if equals:
            return f"{name}="
        return f"{name}=False" if no else name
    return _FLAG.sub(one, message).replace("flag ", "argument ").replace("flags", "arguments")


def _translated(error: UserError, hint: str = "") -> UserError:
    """The same error (same class), its message speaking of arguments instead of flags.

    Args:
        error: a library error worded for the command line.
        hint: appended to the message (an API-only way out).
    """
    translated = type(error).__new__(type(error))
    translated.__dict__.update(error.__dict__)
    translated.args = (_as_arguments(str(error)) + hint,) + error.args[1:]
    return translated


def train_and_evaluate(config: TrainConfig, workdir: str | os.PathLike, **kwargs) -> dict:
    """Trains (or resumes) a model in `workdir` and evaluates it: `training.trainer`'s run.

    The same run as `python -m mnist_tf.train`; TensorFlow's logging is
    quieted for the call only, and errors name arguments, not flags.

    Args:
        config: the run's `TrainConfig`.
        workdir: the training workdir (created, or resumed when it holds a run).
        **kwargs: passed on to `mnist_tf.training.trainer.train_and_evaluate`
            (data_dir, manual_dir, allow_download, log...).

    Returns:
        The results dict (as results.json).

    Raises:
        UserError: for settings, data or workdir problems, worded for Python.
    """
    from mnist_tf.quiet import quiet

    try:
        with quiet():
            from mnist_tf.training import trainer

            return trainer.train_and_evaluate(config, os.fspath(workdir), **kwargs)
    except UserError as e:
        raise _translated(e) from None


def load(workdir: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> Classifier:
    """Restores a trained model from a training workdir.

    The restore is training's own (`inference.load_model`): the architecture
    comes from the workdir's config.json, every variable must match, and a
    damaged newest checkpoint falls back to the newest intact one (with a
    warning on stderr).

    Args:
        workdir: a workdir that `train_and_evaluate` (or `python -m
            mnist_tf.train`) trained in.
        checkpoint: a checkpoint prefix such as `WORKDIR/checkpoints/ckpt-20`;
            None means the workdir's newest.

    Returns:
        A `Classifier`.

    Raises:
        UserError: if the workdir does not exist or holds no trained run.
        CheckpointError: for a missing, damaged or mismatched checkpoint.
    """
    from mnist_tf.quiet import quiet

    workdir = os.path.abspath(os.fspath(workdir))
    checkpoint = None if checkpoint is None else os.fspath(checkpoint)
    try:
        with quiet():
            from mnist_tf import inference

            return Classifier(inference.load_model(workdir, checkpoint), workdir)
    except UserError as e:
        raise _translated(e) from None


def to_model_input(images) -> np.ndarray:
    """Checks images for `Classifier.predict` and returns the model's float32 [N, 784].

    The rule for pixel values: integers are pixels 0..255 (MNIST's uint8, as
    `keras.datasets.mnist.load_data()` gives them), normalised exactly as in
    training (x / 255); floats are taken as already normalised and must lie in
    [0, 1] (what notebooks get from `x / 255`). Floats are never rescaled by
    guessing from their values: a batch of faint digits in 0..255 would look
    normalised, so floats outside [0, 1] are refused instead.

    Args:
        images: an array (or nested list) of shape [N, 28, 28], [N, 28, 28, 1],
            [N, 784], or one [28, 28] image (N = 1).

    Returns:
        float32 [N, 784] in [0, 1].

    Raises:
        UserError: for another shape, a non-numeric dtype, or values outside
            the rule above; the one-line message says what to pass instead.
    """
    try:
        array = np.asarray(images)
    except (ValueError, TypeError) as e:  # Ragged nested lists, mostly.
        problem = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"images: cannot be read as one array ({problem}); pass a numpy "
                        f"array of shape {IMAGE_SHAPES}") from None
    if array.shape == (IMAGE_SIZE, IMAGE_SIZE):
        array = array[None]
    elif array.shape[1:] not in IMAGE_TRAILING_SHAPES:
        raise UserError(f"images: shape {list(array.shape)} is not {IMAGE_SHAPES}; resize the "
                        "digits to 28x28 first (python -m mnist_tf.predict does that for "
                        "image files)")
    is_integer = np.issubdtype(array.dtype, np.integer)
    if not (is_integer or np.issubdtype(array.dtype, np.floating)):  # bool, complex, str...
        raise UserError(f"images: dtype {array.dtype} is not pixel data; pass {PIXEL_RULE}")
    if is_integer:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise UserError(f"images: integer pixels must lie in 0..255, got {array.min()} to "
                            f"{array.max()}; pass {PIXEL_RULE}")
        # The one normalisation training uses, so predictions match bit for bit
        # (with a warning for digits binarised to 0/1).
        return _warn_if_dark_on_light(np.asarray(preprocess.to_model_input(array)))
    if not np.isfinite(array).all():
        raise UserError("images: contains NaN or infinite values; pass finite pixels "
                        f"({PIXEL_RULE})")
    if array.size and (array.min() < 0 or array.max() > 1):
        hint = preprocess.float_range_hint(array.min(), array.max())
        raise UserError(f"images: float pixels must lie in [0, 1], got {array.min():g} to "
                        f"{array.max():g}{hint}; pass {PIXEL_RULE}")
    return _warn_if_dark_on_light(array.astype(np.float32).reshape(-1, NUM_PIXELS))


def _warn_if_dark_on_light(pixels: np.ndarray) -> np.ndarray:
    """Warns about images that are mostly bright: dark ink on paper, not MNIST's white on black.

    Such an image gets a confident but meaningless answer; a warning (rather
    than a silent guess) tells the caller to invert it or to pass the file.
    """
    bright = (pixels > 0.5).mean(axis=1) > 0.5 if len(pixels) else np.zeros(0, bool)
    if bright.any():
        warnings.warn(f"images: {int(bright.sum())} of {len(pixels)} images are mostly bright "
                      "(dark digits on a light background?); the model expects white digits "
                      "on black as in MNIST: pass 255 - images (or 1 - images), or the image "
                      "file's path", UserWarning, stacklevel=3)
    return pixels


class Classifier:
    """A trained model restored from a workdir (made by `load`): predict, evaluate, export."""

    def __init__(self, loaded: LoadedModel, workdir: str):
        """Wraps a restored model; use `mnist_tf.load(workdir)` to make one.

        Args:
            loaded: the `inference.LoadedModel` restored from `workdir`.
            workdir: the absolute path of the training workdir.
        """
        self._loaded = loaded
        self.workdir = workdir
        self._predict_fn = None  # Traced on first use, then reused: one trace.

    @property
    def config(self) -> TrainConfig:
        """The `TrainConfig` the model was trained with (from the workdir's config.json)."""
        return self._loaded.config

    @property
    def checkpoint(self) -> str:
        """The checkpoint prefix the weights came from."""
        return self._loaded.checkpoint

    @property
    def step(self) -> int:
        """The checkpoint's global step (batches trained)."""
        return self._loaded.step

    @property
    def weights(self) -> str:
        """"averaged" (the run's `--ema_decay` moving average) or "trained"."""
        return self._loaded.weights

    @property
    def model(self) -> MLP:
        """The `mnist_tf.model.mlp.MLP`: float32 [N, 784] in [0, 1] -> logits [N, 10]."""
        return self._loaded.model

    def __repr__(self) -> str:
        return (f"Classifier(checkpoint={self.checkpoint!r}, step={self.step}, "
                f"hidden_sizes={list(self.config.hidden_sizes)}, weights={self.weights!r})")

    def predict(self, images) -> dict[str, np.ndarray]:
        """Classifies digits.

        Args:
            images: [N, 28, 28], [N, 28, 28, 1], [N, 784] or one [28, 28]
                image; uint8 (or integer) pixels 0..255 are normalised as in
                training (x / 255); floats are taken as already normalised and
                must lie in [0, 1]. Digits are white ink on black, centred,
                as in MNIST; `mnist_tf.data.preprocess.prepare_file(path)`
                turns an image file into one (what `python -m mnist_tf.predict`
                does).

        Returns:
            {"classes": int64 [N], "probabilities": float32 [N, 10]} (numpy).

        Raises:
            UserError: for another shape, dtype or pixel range (see
                `to_model_input`).
        """
        from mnist_tf import inference
        from mnist_tf.inference.predict import predict_in_batches
        from mnist_tf.quiet import quiet

        pixels = to_model_input(images)
        with quiet():
            if self._predict_fn is None:
                self._predict_fn = inference.make_predict_fn(self.model)
            probabilities = predict_in_batches(self._predict_fn, pixels,
                                               self.config.eval_batch_size)
        return {"classes": probabilities.argmax(axis=1).astype(np.int64),
                "probabilities": probabilities}

    def evaluate(
        self,
        split: str = "test",
        data_dir: str | os.PathLike | None = None,
        manual_dir: str | os.PathLike | None = None,
        allow_download: bool = True,
        log: Callable[[str], None] = print,
        write_files: bool = False,
    ) -> dict:
        """Evaluates the model on a split, exactly as `python -m mnist_tf.evaluate` does.

        The data is found or prepared as for training; the validation split is
        the run's own (carved with its recorded `validation_size`).

        Args:
            split: "test" or "validation".
            data_dir: TFDS data directory (None: $TFDS_DATA_DIR, else TFDS's default).
            manual_dir: optional directory with the four official MNIST IDX files.
            allow_download: whether TFDS's own download may be tried.
            log: receives the data source's progress lines.
            write_files: also write what the command line writes into the
                workdir (`eval.json` or `eval_validation.json`, the
                confusion-matrix PNG and its TensorBoard image).

        Returns:
            The command line's results: split, checkpoint, step, num_examples,
            loss, accuracy, per-class precision/recall/support (lists indexed
            by class), confusion_matrix (nested lists; rows: true class,
            columns: predicted), hidden_sizes, data_dir; and `files` with
            `write_files`.

        Raises:
            UserError: for an unknown split, a run without a validation split,
                or data problems (`DataError`).
        """
        from mnist_tf.inference import evaluate
        from mnist_tf.quiet import quiet

        try:
            with quiet():
                return evaluate.evaluate_loaded(
                    self._loaded, self.workdir, split,
                    data_dir=None if data_dir is None else os.fspath(data_dir),
                    manual_dir=None if manual_dir is None else os.fspath(manual_dir),
                    allow_download=allow_download, log=log, write_files=write_files)
        except UserError as e:
            raise _translated(e) from None

    def export(self, export_dir: str | os.PathLike, overwrite: bool = False) -> dict:
        """Writes the model as a SavedModel, exactly as `python -m mnist_tf.export` does.

        It serves with TensorFlow alone: `tf.saved_model.load(export_dir)
        .signatures["serving_default"](images=uint8_images)`.

        Args:
            export_dir: the directory to create; it must not exist or be empty,
                unless `overwrite`.
            overwrite: replace an existing export at `export_dir` (so a
                notebook's Restart & Run All works); the old export is put
                back if the new one fails.

        Returns:
            What was exported: export_dir, workdir, checkpoint, step,
            hidden_sizes, signature (also in `export_dir/assets.extra/mnist_tf.json`).

        Raises:
            UserError: if `export_dir` is non-empty or cannot be created.
        """
        from mnist_tf.inference import export
        from mnist_tf.quiet import quiet

        export_dir = os.path.abspath(os.fspath(export_dir))
        try:
            return self._export(export, quiet, export_dir, overwrite)
        except UserError as e:
            raise _translated(e, "" if overwrite else " (or pass overwrite=True)") from None

    def _export(self, export, quiet, export_dir: str, overwrite: bool) -> dict:
        """Exports to `export_dir`, first moving an existing export aside with `overwrite`."""
        with quiet():
            if not overwrite or not os.path.isdir(export_dir) or not os.listdir(export_dir):
                return export.export_loaded(self._loaded, self.workdir, export_dir)
            aside = f"{export_dir}.replaced-{os.getpid()}"
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(export_dir, aside)  # Kept until the new export is in place.
            try:
                exported = export.export_loaded(self._loaded, self.workdir, export_dir)
            except BaseException:
                shutil.rmtree(export_dir, ignore_errors=True)
                os.replace(aside, export_dir)
                raise
            shutil.rmtree(aside, ignore_errors=True)
            return exported
