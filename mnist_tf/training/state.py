"""The training state: model, Adam, RNG, loss scale and data position; the checkpoint root."""

from __future__ import annotations

import contextlib
import os

import tensorflow as tf

from mnist_tf import workdir as workdirs
from mnist_tf.config import TrainConfig
from mnist_tf.errors import CheckpointError
from mnist_tf.model.ema import WeightAverage
from mnist_tf.model.mlp import MLP
from mnist_tf.model.optimizers import Adam
from mnist_tf.model.precision import LossScale, policy
from mnist_tf.training import checkpoints


class TrainState(tf.Module):
    """Everything a run's checkpoint holds, created eagerly with explicit shapes.

    The attribute names are the checkpoint's keys (`model/...`,
    `optimizer/...`, `rng/...`, `loss_scale/...`), so every tool restores the
    same layout through `restore`.

    The data position needs no variable of its own: the epoch order is a
    stateless function of (seed, epoch) (`data.pipeline.epoch_order`), so the
    number of batches trained (`step`) fixes both the epoch and the offset in
    it.

    Attributes:
        model: the MLP (float32 master weights).
        optimizer: Adam with its step counter and m/v slots.
        rng: the generator that dropout and augmentation seeds are drawn from;
            checkpointed so a resumed run draws what it would have drawn.
        loss_scale: dynamic loss scale (inert at 1.0 unless mixed_float16)
            and the count of skipped updates.
        ema: with `--ema_decay`, the moving average of the weights (float32
            variables, checkpointed as `ema/...`); None otherwise, so runs
            without it keep their checkpoint layout.
        config: the run's configuration as text (`workdir.config_text`), a
            string variable: the checkpoint carries the settings that trained
            it, so the resume check needs no file beside it.
    """

    def __init__(
        self,
        config: TrainConfig,
        strategy: tf.distribute.Strategy | None = None,
        compute_dtype: tf.DType | None = None,
        name: str | None = None,
    ):
        """Creates the state of a run of `config`.

        Args:
            config: the run's configuration (architecture, seed, dropout,
                precision, nan_policy).
            strategy: under a `tf.distribute` strategy, the model, Adam and
                loss-scale variables are created in its scope (mirrored);
                the checkpoint holds one copy, so checkpoints move freely
                between strategies.
            compute_dtype: overrides the precision's compute dtype (inference
                always computes in float32).
            name: module name.
        """
        super().__init__(name=name)
        mixed = policy(config.precision)
        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with scope:
            self.model = MLP(config.hidden_sizes, seed=config.seed, dropout=config.dropout,
                             compute_dtype=compute_dtype or mixed.compute_dtype,
                             deskew=config.deskew)
            self.optimizer = Adam(self.model.parameters())
            self.loss_scale = LossScale(enabled=mixed.loss_scaling,
                                        skip_nonfinite=config.nan_policy == "skip_step")
            self.ema = WeightAverage(self.model, config.ema_decay) if config.ema_decay else None
        # Outside the strategy's scope: one generator, drawn from once per
        # step in cross-replica context, exactly as without a strategy.
        self.rng = tf.random.Generator.from_seed(config.seed + 1)
        self.config = tf.Variable(workdirs.config_text(config), trainable=False, name="config")

    @property
    def eval_model(self) -> MLP:
        """The weights evaluation, prediction and export use: the average if there is one."""
        return self.ema.model if self.ema is not None else self.model

    @property
    def step(self) -> int:
        """Batches trained so far: Adam's updates plus the updates skipped as non-finite."""
        return int(self.optimizer.step.numpy()) + int(self.loss_scale.skipped_steps.numpy())


def checkpoint_objects(state: TrainState) -> dict[str, tf.Module | tf.Variable]:
    """The checkpoint's objects by key: the one layout every tool saves and restores."""
    # The average only when there is one: runs without it keep their layout.
    extra = {"ema": state.ema} if state.ema is not None else {}
    return dict(model=state.model, optimizer=state.optimizer, rng=state.rng,
                loss_scale=state.loss_scale, **{checkpoints.CONFIG_KEY: state.config}, **extra)


def make_manager(state: TrainState, workdir: str, max_to_keep: int = 3, log=None
                 ) -> tf.train.CheckpointManager:
    """A manager saving `state` under `workdir/checkpoints` (see `checkpoints.make_manager`)."""
    return checkpoints.make_manager(workdir, max_to_keep, log, **checkpoint_objects(state))


def recorded_config(workdir: str, checkpoint: str | None = None
                    ) -> tuple[TrainConfig | None, str | None]:
    """The configuration that trained `workdir`'s checkpoints, and where it was read.

    The newest readable checkpoint (or `checkpoint`) carries it; checkpoints
    saved before they carried it fall back to config.json.

    Returns:
        (the config, its source for messages), or (None, None) when the
        workdir has no checkpoint.

    Raises:
        UserError: when checkpoints exist but no configuration is recorded for
            them, or the recorded one is invalid.
    """
    found = [checkpoint] if checkpoint else workdirs.checkpoint_paths(workdir)
    for path in found:
        try:
            text = checkpoints.carried_config(path)
        except checkpoints.DAMAGE:
            continue  # Damaged or rotated away: an older one may tell.
        if text is not None:
            source = f"{path} (the configuration it was saved with)"
            return workdirs.parse_config(text, source), source
    if not found:
        return None, None
    if not os.path.exists(os.path.join(workdir, workdirs.CONFIG_FILE)):
        raise workdirs.unrecorded_checkpoints(workdir)
    return workdirs.read_config(workdir), os.path.join(workdir, workdirs.CONFIG_FILE)


def restore(state: TrainState, workdir: str, checkpoint: str | None = None, log=None
            ) -> str | None:
    """Restores `state` from `workdir`: the one restore of training, evaluate, predict, export.

    Every variable of the state must be in the checkpoint (Adam's slots
    included), a damaged newest checkpoint falls back to the newest intact
    one, and one rotated away while read gives way to the newest
    (`checkpoints.restore`).

    Args:
        state: receives the values.
        workdir: the run's workdir.
        checkpoint: a checkpoint prefix to restore instead of the newest;
            it must exist.
        log: receives warning lines (default: print).

    Returns:
        The restored path, or None when the workdir has no checkpoint yet.

    Raises:
        CheckpointError: for a missing `checkpoint`, or when no checkpoint
            can be restored into `state`.
    """
    if checkpoint is not None and not tf.io.gfile.exists(checkpoint + ".index"):
        raise CheckpointError(
            f"--checkpoint: {checkpoint} is not a checkpoint ({checkpoint}.index does not "
            f"exist; the workdir's are in {os.path.join(workdir, checkpoints.CHECKPOINT_SUBDIR)})")
    describe = (f"the architecture {list(state.model.hidden_sizes)} recorded in "
                f"{os.path.join(workdir, workdirs.CONFIG_FILE)} (with Adam's slots)")
    return checkpoints.restore(checkpoint_objects(state), workdir, checkpoint, log=log,
                               describe=describe)
