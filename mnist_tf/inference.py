"""Restoring a trained model from a workdir, for evaluation, prediction and export."""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf

from mnist_tf.config import TrainConfig
from mnist_tf.constants import NUM_PIXELS
from mnist_tf.errors import CheckpointError, UserError
from mnist_tf.model.mlp import MLP
from mnist_tf.training.checkpoints import CHECKPOINT_SUBDIR

CONFIG_FILE = "config.json"


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model restored from a checkpoint.

    Attributes:
        model: the MLP with the checkpoint's weights.
        config: the training configuration recorded in the workdir.
        checkpoint: the checkpoint prefix the weights came from.
        step: the global step of that checkpoint (from its name; -1 if unknown).
    """

    model: MLP
    config: TrainConfig
    checkpoint: str
    step: int


def read_run_config(workdir: str) -> TrainConfig:
    """Reads the `TrainConfig` that `python -m mnist_tf.train` recorded in `workdir`.

    Raises:
        UserError: if the workdir holds no readable, valid config.json.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isdir(workdir):
        raise UserError(f"--workdir: {workdir} does not exist; train a model there first "
                        f"(python -m mnist_tf.train --workdir={workdir})")
    if not os.path.isfile(path):
        raise UserError(f"--workdir: {workdir} holds no trained run ({CONFIG_FILE} is missing); "
                        f"train one with python -m mnist_tf.train --workdir={workdir}")
    try:
        with open(path) as f:
            values = json.load(f)
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        values = {k: v for k, v in values.items() if k in fields}
        values["hidden_sizes"] = tuple(values.get("hidden_sizes", ()))
        return TrainConfig(**values)
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"{path} is unreadable or invalid ({e})") from None


def _step_of(checkpoint: str) -> int:
    suffix = os.path.basename(checkpoint).rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1


def load_model(workdir: str, checkpoint: str | None = None) -> LoadedModel:
    """Builds the workdir's architecture and restores the latest (or the named) checkpoint.

    Only the model's variables are read (optimizer state is not needed to
    predict), but every one of them must be in the checkpoint with the right
    shape.

    Args:
        workdir: a training workdir.
        checkpoint: a checkpoint prefix (e.g. `WORKDIR/checkpoints/ckpt-4290`);
            None means the latest in the workdir.

    Returns:
        A `LoadedModel`.

    Raises:
        UserError: if the workdir holds no run.
        CheckpointError: if there is no checkpoint, or it is damaged or from
            another architecture.
    """
    config = read_run_config(workdir)
    if checkpoint is None:
        checkpoint = tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINT_SUBDIR))
        if checkpoint is None:
            raise CheckpointError(
                f"{os.path.join(workdir, CHECKPOINT_SUBDIR)} holds no checkpoint; "
                "train (or resume) in this workdir first")
    elif not tf.io.gfile.exists(checkpoint + ".index"):
        raise CheckpointError(f"--checkpoint: {checkpoint} is not a checkpoint "
                              f"({checkpoint}.index does not exist)")
    model = MLP(config.hidden_sizes, seed=config.seed, dropout=config.dropout)
    try:
        status = tf.train.Checkpoint(model=model).restore(checkpoint)
        status.expect_partial()  # The optimizer and RNG are not needed here.
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"checkpoint {checkpoint} does not fit the architecture "
                              f"{list(config.hidden_sizes)} recorded in {workdir}, or is "
                              f"damaged: {first_line}") from None
    return LoadedModel(model, config, checkpoint, _step_of(checkpoint))


def make_predict_fn(model: MLP, jit_compile: bool = False):
    """Returns a traced function: float32 images [N, 784] in [0, 1] -> probabilities [N, 10]."""

    def predict(images):
        return tf.nn.softmax(model(images, training=False))

    signature = [tf.TensorSpec([None, NUM_PIXELS], tf.float32, name="images")]
    return tf.function(predict, input_signature=signature, jit_compile=jit_compile)
