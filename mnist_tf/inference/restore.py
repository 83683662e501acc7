"""Restoring a trained model from a workdir, and its traced predict function."""

from __future__ import annotations

import dataclasses
import os
import sys

import tensorflow as tf

from mnist_tf import workdir as workdirs
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


def load_model(workdir: str, checkpoint: str | None = None, log=None) -> LoadedModel:
    """Builds the workdir's training state and restores the newest (or the named) checkpoint.

    The same restore as training's (`training.state.restore`): every variable
    must match, a damaged newest checkpoint falls back to the newest intact
    one with a warning, and one that a live run rotates away while it is read
    gives way to the run's newest. The configuration is the one the
    checkpoint was saved with (config.json for checkpoints that carry none).

    Args:
        workdir: a training workdir.
        checkpoint: a checkpoint prefix (e.g. `WORKDIR/checkpoints/ckpt-4290`);
            None means the newest in the workdir.
        log: receives the fallback warning (default: stderr).

    Returns:
        A `LoadedModel`.

    Raises:
        UserError: if the workdir holds no run.
        CheckpointError: if there is no checkpoint, or none can be restored.
    """
    from mnist_tf.training import state as train_state

    workdirs.check_is_directory(workdir)  # First: "holds no checkpoint" would mislead.
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
