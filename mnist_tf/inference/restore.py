"""Restoring a trained model from a workdir, and its traced predict function."""

from __future__ import annotations

import dataclasses
import os
import sys

import tensorflow as tf

from mnist_tf import workdir as workdirs
from mnist_tf.choices import BEST, LATEST
from mnist_tf.config import TrainConfig
from mnist_tf.constants import NUM_PIXELS
from mnist_tf.errors import CheckpointError
from mnist_tf.model.mlp import MLP
from mnist_tf.workdir import CHECKPOINT_SUBDIR


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model restored from a checkpoint.

    Attributes:
        model: the MLP with the checkpoint's weights: with `--ema_decay`, the
            averaged weights (`weights` says which).
        config: the training configuration the checkpoint was saved with.
        checkpoint: the checkpoint prefix the weights came from.
        step: the global step of that checkpoint (batches trained).
    """

    model: MLP
    config: TrainConfig
    checkpoint: str
    step: int

    @property
    def weights(self) -> str:
        """"averaged" (the run's --ema_decay average) or "trained": the config decides."""
        return self.config.weights_kind

    def describe(self) -> str:
        """"CHECKPOINT (step N, the averaged weights (EMA, decay D))": what tools print."""
        return f"{self.checkpoint} (step {self.step}, {self.config.weights_description})"


# --checkpoint's words: the newest rolling checkpoint, and the best (--keep_best).
# How often `load_model` looks for the best again when the one it was reading
# was replaced under it (a live run's new best).
_MAX_BEST_TRIES = 5


def resolve_checkpoint(workdir: str, checkpoint: str | None) -> str | None:
    """What --checkpoint names: None for the newest (None, "latest"), a prefix otherwise.

    The one reading of --checkpoint for every tool (evaluate, predict,
    export, plot, `mnist_tf.load`): "best" is the workdir's best checkpoint
    (`--keep_best`, `workdir.best_checkpoint_paths`); anything else is a
    checkpoint prefix, checked by the restore.

    Raises:
        CheckpointError: for "best" when the workdir keeps no best checkpoint.
    """
    if checkpoint is None or checkpoint == LATEST:
        return None
    if checkpoint != BEST:
        return checkpoint
    found = workdirs.best_checkpoint_paths(workdir)
    if not found:
        raise CheckpointError(
            f"--checkpoint=best: {workdir} keeps no best checkpoint "
            f"({os.path.join(workdir, workdirs.BEST_SUBDIR)} holds none); train with "
            "--keep_best=validation_loss (or validation_accuracy, either with "
            "--validation_size > 0) to keep one, or pass --checkpoint=latest")
    return found[0]


def load_model(workdir: str, checkpoint: str | None = None, log=None) -> LoadedModel:
    """Builds the workdir's training state and restores the newest, best or named checkpoint.

    The same restore as training's (`training.state.restore`): every variable
    must match, a damaged newest checkpoint falls back to the newest intact
    one with a warning, and one that a live run rotates away while it is read
    gives way to the run's newest. The configuration is the one the
    checkpoint was saved with (config.json for checkpoints that carry none).

    Args:
        workdir: a training workdir.
        checkpoint: "latest" or None (the newest in the workdir), "best" (the
            best checkpoint that `--keep_best` kept: `resolve_checkpoint`), or
            a checkpoint prefix (e.g. `WORKDIR/checkpoints/ckpt-4290`).
        log: receives the fallback warning (default: stderr).

    Returns:
        A `LoadedModel`.

    Raises:
        UserError: if the workdir holds no run.
        CheckpointError: if there is no checkpoint (no best one, for "best"),
            or none can be restored.
    """
    workdirs.check_is_directory(workdir)  # First: "holds no checkpoint" would mislead.
    for _ in range(_MAX_BEST_TRIES if checkpoint == BEST else 1):
        path = resolve_checkpoint(workdir, checkpoint)
        try:
            return _load(workdir, path, log)
        except CheckpointError:
            # A live run replaced its best while it was read: read the new one.
            if checkpoint != BEST or os.path.exists(path + ".index"):
                raise
    raise CheckpointError(f"--checkpoint=best: the best checkpoint in {workdir} kept being "
                          "replaced while it was read; try again")


def _load(workdir: str, checkpoint: str | None, log) -> LoadedModel:
    """`load_model` of the newest checkpoint (None) or a prefix."""
    from mnist_tf.training import state as train_state

    config, _ = train_state.recorded_config(workdir, checkpoint if _exists(checkpoint) else None)
    if config is None:
        workdirs.read_config(workdir)  # A workdir with no run says so.
        raise _no_checkpoint(workdir)
    # Inference computes in float32 whatever precision trained the weights
    # (the master weights are float32 either way).
    state = train_state.TrainState(config, compute_dtype=tf.float32)
    log = log or (lambda line: print(line, file=sys.stderr))
    restored = train_state.restore(state, workdir, checkpoint, log=log)
    if restored is None:  # Every checkpoint went between listing and restoring.
        raise _no_checkpoint(workdir)
    return LoadedModel(state.eval_model, config, restored, state.step)


def _no_checkpoint(workdir: str) -> CheckpointError:
    return CheckpointError(f"{os.path.join(workdir, CHECKPOINT_SUBDIR)} holds no checkpoint; "
                           "train (or resume) in this workdir first")


def _exists(checkpoint: str | None) -> bool:
    return checkpoint is not None and os.path.exists(checkpoint + ".index")


def make_predict_fn(model: MLP, jit_compile: bool = False):
    """Returns a traced function: float32 images [N, 784] in [0, 1] -> probabilities [N, 10]."""

    def predict(images):
        return tf.nn.softmax(model(images, training=False))

    signature = [tf.TensorSpec([None, NUM_PIXELS], tf.float32, name="images")]
    return tf.function(predict, input_signature=signature, jit_compile=jit_compile)
