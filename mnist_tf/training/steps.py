"""The one train-step body, the eval step, and the metric accumulators they update.

The runners (`training/runners.py`) trace the train-step body in their own
ways: one step per call, several steps per call, or under a `tf.distribute`
strategy; there is no second copy of the maths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import tensorflow as tf

from mnist_tf.constants import NUM_PIXELS, model_input
from mnist_tf.data.augment import AffineAugment
from mnist_tf.model import losses
from mnist_tf.model.mlp import MLP
from mnist_tf.training.state import TrainState


class Metrics(tf.Module):
    """Running sums of loss, correct predictions and examples, kept in variables.

    The traced steps only `assign_add` into them, so reading them (which syncs
    with the device) happens once per log interval, not once per step.
    """

    def __init__(self, name: str | None = None, gradients: bool = False,
                 clipping: bool = False):
        """Creates the sums.

        Args:
            name: module name.
            gradients: also sum the training steps' global gradient norms
                (`add_gradients`), so `result` gives their mean as `grad_norm`.
            clipping: also count the clipped steps, so `result` gives their
                share as `clipped_fraction`.
        """
        super().__init__(name=name)
        self.gradients, self.clipping = gradients, clipping
        with self.name_scope:
            self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="loss_sum")
            self.correct = tf.Variable(0, dtype=tf.int64, trainable=False, name="correct")
            self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="count")
            # Steps with finite gradients, their norms' sum, and how many were clipped.
            self.norm_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="norm_sum")
            self.norm_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="norm_steps")
            self.clipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="clipped")

    def update(self, per_example_loss: tf.Tensor, logits: tf.Tensor, labels: tf.Tensor,
               mask: tf.Tensor | None = None) -> None:
        """Adds a batch; `mask` [batch] bool excludes padding rows."""
        correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels)
        if mask is not None:
            per_example_loss = tf.where(mask, per_example_loss, 0.0)
            correct = tf.logical_and(correct, mask)
            count = tf.reduce_sum(tf.cast(mask, tf.int64))
        else:
            count = tf.cast(tf.shape(labels)[0], tf.int64)
        self.loss_sum.assign_add(tf.cast(tf.reduce_sum(per_example_loss), tf.float64))
        self.correct.assign_add(tf.reduce_sum(tf.cast(correct, tf.int64)))
        self.count.assign_add(count)

    def add(self, loss_sum: tf.Tensor, correct: tf.Tensor, count: tf.Tensor | int) -> None:
        """Adds sums already reduced over a batch (and over replicas)."""
        self.loss_sum.assign_add(tf.cast(loss_sum, tf.float64))
        self.correct.assign_add(tf.cast(correct, tf.int64))
        self.count.assign_add(tf.cast(count, tf.int64))

    def add_gradients(self, norm: tf.Tensor, finite: tf.Tensor, clipped: tf.Tensor) -> None:
        """Adds one step's global gradient norm (if `finite`) and whether it was clipped."""
        self.norm_sum.assign_add(tf.where(finite, tf.cast(norm, tf.float64), 0.0))
        self.norm_steps.assign_add(tf.cast(finite, tf.int64))
        self.clipped.assign_add(tf.cast(clipped, tf.int64))

    def result(self) -> dict[str, float]:
        """Returns {"loss", "accuracy", "count"} as Python numbers (syncs with the device).

        With `gradients`, also "grad_norm": the mean global gradient norm of the
        steps with finite gradients (NaN if none); with `clipping`, also
        "clipped_fraction": the share of those steps whose gradients were clipped.
        """
        count = int(self.count.numpy())
        result = {"loss": float("nan"), "accuracy": float("nan"), "count": count}
        if count:
            result.update(loss=float(self.loss_sum.numpy()) / count,
                          accuracy=int(self.correct.numpy()) / count)
        steps = int(self.norm_steps.numpy())
        if self.gradients:
            result["grad_norm"] = float(self.norm_sum.numpy()) / steps if steps else float("nan")
        if self.clipping:
            result["clipped_fraction"] = (int(self.clipped.numpy()) / steps if steps
                                          else float("nan"))
        return result

    def reset(self) -> None:
        """Zeroes the sums."""
        for variable in (self.loss_sum, self.correct, self.count, self.norm_sum,
                         self.norm_steps, self.clipped):
            variable.assign(tf.zeros_like(variable))


class StepOutput(NamedTuple):
    """What one training step returns.

    Attributes:
        loss: float32 scalar, the batch's mean loss (over replicas: the global
            batch's).
        gradients: the float32 gradients the step applied (or skipped), one
            per `model.parameters()` entry, for the TensorBoard histograms.
        diverged: bool scalar: the loss or a gradient was not finite and
            `--nan_policy=stop` must end the run (the update was skipped, so
            the weights stay finite).
        stop: bool scalar: some process voted to stop (SIGTERM/SIGINT).
    """

    loss: tf.Tensor
    gradients: list[tf.Tensor]
    diverged: tf.Tensor
    stop: tf.Tensor


def global_norm(loss: tf.Tensor, gradients: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
    """The gradients' global L2 norm, and whether it and the loss are finite (bool scalar).

    One reduction serves both the gradient-health metrics and the guard: a NaN
    or infinite element makes the norm NaN or infinite. So does a sum of
    squares past float32's range (a norm above ~1e19), which is divergence in
    all but name. The gradients are checked, not only the loss: on AVX-512
    CPUs oneDNN's fused MatMul+BiasAdd+Relu maps NaN to 0 inside a
    `tf.function`, so a NaN input can give a finite loss and NaN gradients.
    """
    norm = tf.linalg.global_norm(gradients)
    finite = tf.logical_and(tf.reduce_all(tf.math.is_finite(loss)), tf.math.is_finite(norm))
    return norm, finite


def make_train_step(
    state: TrainState,
    schedule,
    metrics: Metrics,
    global_batch_size: int,
    weight_decay: float = 0.0,
    augment: AffineAugment | None = None,
    nan_policy: str = "stop",
    strategy: tf.distribute.Strategy | None = None,
    clip_grad_norm: float = 0.0,
) -> Callable[[tf.Tensor, tf.Tensor, tf.Tensor], StepOutput]:
    """Builds the body of one training step, for the runners to trace.

    Forward, loss (+ L2), gradients, the non-finite guard, clipping, Adam and
    the metrics, in that order. Each replica computes the gradients of its share
    of the global batch with the loss averaged over the *global* batch
    (`tf.nn.compute_average_loss`), so the SUM of the replicas' gradients is
    the gradient of the global batch's mean loss; Adam then applies it once,
    in cross-replica context. Without a strategy the default one runs the
    replica function directly, and the sums are the values themselves.

    Args:
        state: the `TrainState` (created in `strategy`'s scope, if any).
        schedule: maps Adam's int64 step to the float32 learning rate.
        metrics: training-loss/accuracy accumulators.
        global_batch_size: examples per step over all replicas.
        weight_decay: L2 coefficient on the kernels.
        augment: if given, warps each batch with seeds drawn from `state.rng`.
        nan_policy: "stop" (a non-finite step is skipped and reported as
            `diverged`) or "skip_step" (skipped and counted).
        strategy: a `tf.distribute` strategy, or None.
        clip_grad_norm: clip the gradients to this global norm (0: off).

    Returns:
        `train_step(images, labels, stop_vote) -> StepOutput`, to be called in
        cross-replica context inside a `tf.function`; `stop_vote` is this
        process's int32 vote (1 after SIGTERM/SIGINT).
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    model, loss_scale = state.model, state.loss_scale
    parameters, kernels = model.parameters(), model.kernels()
    use_dropout = model.dropout > 0.0
    no_seed = tf.zeros([2], tf.int64)

    def replica_step(images, labels, dropout_seed, augment_seed, stop_vote):
        if replicas > 1:  # Different masks and warps on each replica's examples.
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            offset = tf.stack([tf.cast(replica, tf.int64), tf.constant(0, tf.int64)])
            dropout_seed, augment_seed = dropout_seed + offset, augment_seed + offset
        images = model_input(images)
        if augment is not None:
            with tf.name_scope("augment"):
                images = augment(images, augment_seed)
        with tf.GradientTape() as tape:
            with tf.name_scope("forward"):
                logits = model(images, training=True, seed=dropout_seed if use_dropout else None)
            with tf.name_scope("loss"):
                loss, per_example = losses.total_loss(logits, labels, kernels, weight_decay,
                                                      global_batch_size, replicas)
                scaled_loss = loss_scale.scale_loss(loss)
        # float32 gradients whatever the compute dtype: the variables are float32.
        gradients = tape.gradient(scaled_loss, parameters)
        correct = tf.reduce_sum(tf.cast(
            tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.int64))
        # tf.identity: a per-replica value, so the SUM below spans every process.
        return gradients, loss, tf.reduce_sum(per_example), correct, tf.identity(stop_vote)

    def total(value):
        if replicas == 1:
            return value  # One replica in all: its value is already the total.
        return strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)

    def train_step(images, labels, stop_vote):
        # The name scopes fold the graph into these blocks in TensorBoard's Graphs tab.
        # Seeds are drawn outside the tape, once per step in cross-replica
        # context: dropout's first, then augmentation's, so runs without
        # augmentation draw exactly what they drew before it existed.
        with tf.name_scope("seeds"):
            dropout_seed = state.rng.make_seeds(1)[:, 0] if use_dropout else no_seed
            augment_seed = state.rng.make_seeds(1)[:, 0] if augment is not None else no_seed
        gradients, loss, loss_sum, correct, votes = strategy.run(
            replica_step, args=(images, labels, dropout_seed, augment_seed, stop_vote))
        gradients, loss = [total(g) for g in gradients], total(loss)
        gradients, diverged, health = _apply(state, schedule, parameters, gradients, loss,
                                             nan_policy, clip_grad_norm)
        with tf.name_scope("metrics"):
            metrics.add(total(loss_sum), total(correct), global_batch_size)
            metrics.add_gradients(*health)
        # Any worker asked to stop makes every worker stop after this same
        # step; one stopping alone would leave the others waiting forever in
        # their next all-reduce.
        return StepOutput(loss, gradients, diverged, total(votes) > 0)

    return train_step


def _apply(state, schedule, parameters, gradients, loss, nan_policy, clip_grad_norm=0.0):
    """Unscales, guards, clips and applies the gradients.

    With float16 loss scaling or `--nan_policy=skip_step`, a step whose loss
    or gradients are not all finite is skipped (weights, slots and Adam's
    step untouched) and counted; under loss scaling that is the normal
    overflow case and the scale halves. Under `stop` such a step is
    reported as diverged and the run ends at once with nothing saved after
    it, so its update needs no `tf.cond` (which would cost the fast path
    fusion); a non-finite loss is divergence under `stop` whatever the
    precision.

    The gradients are clipped after the unscaling and (under a strategy)
    after the all-reduce, so every replica applies the same update. Below
    the threshold the factor is exactly 1 and the update is bit-identical
    to an unclipped one.

    Returns:
        (the gradients applied, diverged, (global norm, finite, clipped)):
        the last for the gradient-health metrics.
    """
    loss_scale, optimizer = state.loss_scale, state.optimizer
    gradients = loss_scale.unscale(gradients)
    skips = loss_scale.enabled or loss_scale.skip_nonfinite
    with tf.name_scope("guard"):
        norm, finite = global_norm(loss, gradients)
        loss_scale.update(finite)
        if nan_policy != "stop":
            diverged = tf.constant(False)
        elif loss_scale.enabled:  # Overflowing gradients are loss scaling's business.
            diverged = tf.logical_not(tf.reduce_all(tf.math.is_finite(loss)))
        else:
            diverged = tf.logical_not(finite)
    clipped = tf.constant(False)
    if clip_grad_norm:
        with tf.name_scope("clip"):
            # tf.clip_by_global_norm's factor, kept at 1 for a non-finite norm
            # (the step is skipped or ends the run) so the histograms show the
            # gradients as they came.
            clipped = tf.logical_and(finite, norm > clip_grad_norm)
            factor = tf.where(clipped, clip_grad_norm / tf.maximum(norm, clip_grad_norm), 1.0)
            gradients = [g * factor for g in gradients]

    def apply():
        optimizer.apply(gradients, parameters, schedule(optimizer.step))
        if state.ema is not None:  # Once per applied update, in cross-replica context.
            state.ema.update(parameters, optimizer.step)
        return tf.constant(True)

    with tf.name_scope("adam"):
        if skips:
            tf.cond(finite, apply, lambda: tf.constant(False))
        else:
            apply()
    return gradients, diverged, (norm, finite, clipped)


def make_eval_step(
    model: MLP, metrics: Metrics, batch_size: int, jit_compile: bool = False,
    images_dtype: tf.DType = tf.uint8,
) -> tf.types.experimental.PolymorphicFunction:
    """Builds the one traced eval step: forward pass and masked metric update.

    Args:
        model: the model to evaluate.
        metrics: the accumulators the step adds to.
        batch_size: the static batch size (the last batch is padded).
        jit_compile: compile the step with XLA.
        images_dtype: uint8 pixels (normalised in the step) or float32.

    Returns:
        A `tf.function` taking (images [batch, 784], labels [batch], mask
        [batch] bool), updating `metrics` and returning the predicted classes,
        int32 [batch] (padding rows included; the caller applies `mask`).
        Traced exactly once.
    """

    def eval_step(images, labels, mask):
        logits = model(model_input(images), training=False)
        metrics.update(losses.cross_entropy(logits, labels), logits, labels, mask)
        # Returned so one pass over a split yields both the metrics and what the
        # confusion matrix and misclassified-digit images need.
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    signature = [
        tf.TensorSpec([batch_size, NUM_PIXELS], images_dtype, name="images"),
        tf.TensorSpec([batch_size], tf.int32, name="labels"),
        tf.TensorSpec([batch_size], tf.bool, name="mask"),
    ]
    return tf.function(eval_step, input_signature=signature, jit_compile=jit_compile,
                       autograph=False)
