"""The Python API: train, load, predict, evaluate, export from a notebook.

    import mnist_tf

    config = mnist_tf.TrainConfig(hidden_sizes=(128,), epochs=1)
    results = mnist_tf.train_and_evaluate(config, "runs/notebook")  # training.trainer's
    classifier = mnist_tf.load("runs/notebook")
    classifier.predict(uint8_images)["classes"]     # int64 [N]
    classifier.predict("my_digit.png")["classes"]   # files as python -m mnist_tf.predict
    classifier.evaluate()["accuracy"]               # as python -m mnist_tf.evaluate
    classifier.export("exports/notebook")           # as python -m mnist_tf.export

Everything goes through the functions the command-line tools use: restoring
through `inference.restore.load_model`, evaluation through `inference.evaluate.evaluate_loaded`,
export through `inference.export.export_loaded`, so a notebook and the command line
report the same numbers and write the same SavedModel. Problems a user can
fix raise `mnist_tf.errors.UserError` (or a subclass) with the command line's
one-line message.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from mnist_tf.data.preprocess import to_model_input
from mnist_tf.errors import UserError

if TYPE_CHECKING:  # These load TensorFlow; only their types are needed here.
    from mnist_tf.config import TrainConfig
    from mnist_tf.inference.restore import LoadedModel
    from mnist_tf.model.mlp import MLP

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

    The restore is training's own (`inference.restore.load_model`): the architecture
    comes from the workdir's config.json, every variable must match, and a
    damaged newest checkpoint falls back to the newest intact one (with a
    warning on stderr).

    Args:
        workdir: a workdir that `train_and_evaluate` (or `python -m
            mnist_tf.train`) trained in.
        checkpoint: None or "latest" (the workdir's newest checkpoint), "best"
            (the best one, kept by training with `keep_best`), or a checkpoint
            prefix such as `WORKDIR/checkpoints/ckpt-20`.

    Returns:
        A `Classifier`.

    Raises:
        UserError: if the workdir does not exist or holds no trained run.
        CheckpointError: for a missing, damaged or mismatched checkpoint, or
            "best" in a workdir that keeps no best checkpoint.
    """
    from mnist_tf.quiet import quiet

    workdir = os.path.abspath(os.fspath(workdir))
    checkpoint = None if checkpoint is None else os.fspath(checkpoint)
    try:
        with quiet():
            from mnist_tf.inference.restore import load_model

            return Classifier(load_model(workdir, checkpoint), workdir)
    except UserError as e:
        raise _translated(e) from None


class Classifier:
    """A trained model restored from a workdir (made by `load`): predict, evaluate, export."""

    def __init__(self, loaded: LoadedModel, workdir: str):
        """Wraps a restored model; use `mnist_tf.load(workdir)` to make one.

        Args:
            loaded: the `inference.restore.LoadedModel` restored from `workdir`.
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
        """Classifies digits: arrays, image files or Pillow images.

        Image files (a path, str or os.PathLike) and Pillow images are
        prepared as `python -m mnist_tf.predict` prepares its files
        (`mnist_tf.data.preprocess.prepare_file`: any size, dark ink on
        paper or white on black, cropped, scaled and centred as in MNIST).
        Arrays are taken as MNIST digits already: white ink on black,
        centred; mostly bright arrays (dark ink on paper) get a warning.

        Args:
            images: a path, a Pillow image, or a list of them; or an array of
                [N, 28, 28], [N, 28, 28, 1], [N, 784] or one [28, 28] image,
                whose uint8 (or integer) pixels 0..255 are normalised as in
                training (x / 255) and whose floats are taken as already
                normalised and must lie in [0, 1]. All go through
                `mnist_tf.data.preprocess.to_model_input`.

        Returns:
            {"classes": int64 [N], "probabilities": float32 [N, 10]} (numpy),
            in the order of `images`.

        Raises:
            UserError: for an unusable image file (`ImageError`), a blank
                Pillow image, or an array of another shape, dtype or pixel
                range (see `to_model_input`).
        """
        from mnist_tf.inference.predict import predict_in_batches
        from mnist_tf.inference.restore import make_predict_fn
        from mnist_tf.quiet import quiet

        pixels = to_model_input(images)
        with quiet():
            if self._predict_fn is None:
                self._predict_fn = make_predict_fn(self.model)
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
