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
        best: with `--keep_best`, the `BestRecord` (checkpointed as
            `best/...`); None otherwise, for the same reason.
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
        # Read and assigned eagerly between steps: no replica ever touches it.
        self.best = BestRecord(config.keep_best) if config.keep_best != "none" else None
        self.config = tf.Variable(workdirs.config_text(config), trainable=False, name="config")

    @property
    def eval_model(self) -> MLP:
        """The weights evaluation, prediction and export use: the average if there is one."""
        return self.ema.model if self.ema is not None else self.model

    @property
    def step(self) -> int:
        """Batches trained so far: Adam's updates plus the updates skipped as non-finite."""
        return int(self.optimizer.step.numpy()) + int(self.loss_scale.skipped_steps.numpy())


class BestRecord(tf.Module):
    """The best value of a validation metric so far, its step, and the evaluations since.

    Part of the training state, so a resumed run (and the checkpoint of the
    best itself) carries the record exactly. As orbit's `NewBestMetric`: a
    loss is better lower, an accuracy higher, and a tie keeps the earlier.

    Attributes:
        metric: "validation_loss" or "validation_accuracy" (`--keep_best`).
        value: the best value (float64 holds the evaluation's float exactly).
        step: its step; -1 before the first evaluation.
        stale: evaluations in a row since it without a new best (what
            `--early_stopping_patience` counts).
    """

    def __init__(self, metric: str, name: str | None = None):
        super().__init__(name=name)
        if metric not in ("validation_loss", "validation_accuracy"):
            raise ValueError(f"metric must be validation_loss or validation_accuracy, "
                             f"got {metric!r}")
        self.metric = metric
        self.value = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="value")
        self.step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="step")
        self.stale = tf.Variable(0, dtype=tf.int64, trainable=False, name="stale")

    @property
    def kept(self) -> bool:
        """Whether an evaluation has set a best yet."""
        return int(self.step.numpy()) >= 0

    def improves(self, value: float) -> bool:
        """Whether `value` is strictly better than the best (anything is, before the first)."""
        if not self.kept:
            return True
        best = float(self.value.numpy())
        return value < best if self.metric.endswith("_loss") else value > best

    def update(self, step: int, value: float) -> bool:
        """Records the evaluation at `step`; returns whether it is a new best."""
        if not self.improves(value):
            self.stale.assign_add(1)
            return False
        self.value.assign(value)
        self.step.assign(step)
        self.stale.assign(0)
        return True


def checkpoint_objects(state: TrainState) -> dict[str, tf.Module | tf.Variable]:
    """The checkpoint's objects by key: the one layout every tool saves and restores."""
    # The average only when there is one: runs without it keep their layout.
    extra = {"ema": state.ema} if state.ema is not None else {}
    if state.best is not None:  # Likewise the best's record.
        extra["best"] = state.best
    return dict(model=state.model, optimizer=state.optimizer, rng=state.rng,
                loss_scale=state.loss_scale, **{checkpoints.CONFIG_KEY: state.config}, **extra)


def make_manager(state: TrainState, workdir: str, max_to_keep: int = 3, log=None
                 ) -> tf.train.CheckpointManager:
    """A manager saving `state` under `workdir/checkpoints` (see `checkpoints.make_manager`)."""
    return checkpoints.make_manager(workdir, max_to_keep, log, **checkpoint_objects(state))


def best_checkpoint(state: TrainState) -> tf.train.Checkpoint:
    """`state`'s checkpoint as `checkpoints.save_best` writes it (--keep_best)."""
    checkpoint = tf.train.Checkpoint(**checkpoint_objects(state))
    # Created now, as a manager's save does: every restore expects the counter.
    checkpoint.save_counter  # noqa: B018
    return checkpoint


def recorded_config(workdir: str, checkpoint: str | None = None
                    ) -> tuple[TrainConfig | None, str | None]:
    """The configuration that trained `workdir`'s checkpoints, and where it was read.

    The newest readable checkpoint (or `checkpoint`), the best ones of
    `--keep_best` included, carries it; checkpoints saved before they carried
    it fall back to config.json.

    Returns:
        (the config, its source for messages), or (None, None) when the
        workdir has no checkpoint.

    Raises:
        UserError: when checkpoints exist but no configuration is recorded for
            them, or the recorded one is invalid.
    """
    found = [checkpoint] if checkpoint else workdirs.all_checkpoint_paths(workdir)
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
