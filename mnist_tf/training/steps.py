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

    def __init__(self, name: str | None = None, clipping: bool = False):
        """Creates the sums.

        Args:
            name: module name.
            clipping: also count the steps whose gradients were clipped
                (`add_clipped`), which `result` then gives as `clipped_steps`.
        """
        super().__init__(name=name)
        self.clipping = clipping
        with self.name_scope:
            self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="loss_sum")
            self.correct = tf.Variable(0, dtype=tf.int64, trainable=False, name="correct")
            self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="count")
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

    def add_clipped(self, clipped: tf.Tensor) -> None:
        """Counts one step, if its gradients were clipped (bool scalar)."""
        self.clipped.assign_add(tf.cast(clipped, tf.int64))

    def result(self) -> dict[str, float]:
        """Returns {"loss", "accuracy", "count"} as Python numbers (syncs with the device).

        With `clipping`, also "clipped_steps": how many steps were clipped.
        """
        count = int(self.count.numpy())
        result = {"loss": float("nan"), "accuracy": float("nan"), "count": count}
        if count:
            result.update(loss=float(self.loss_sum.numpy()) / count,
                          accuracy=int(self.correct.numpy()) / count)
        if self.clipping:
            result["clipped_steps"] = int(self.clipped.numpy())
        return result

    def reset(self) -> None:
        """Zeroes the sums."""
        for variable in (self.loss_sum, self.correct, self.count, self.clipped):
            variable.assign(tf.zeros_like(variable))


class StepOutput(NamedTuple):
    """What one training step returns.

    Attributes:
        loss: float32 scalar, the batch's mean loss (over replicas: the global
            batch's).
        gradients: the step's float32 gradients (unscaled, all-reduced, before
            clipping), one per `model.parameters()` entry, for the TensorBoard
            histograms and the logged gradient norm.
        diverged: bool scalar: the loss or a gradient was not finite and
            `--nan_policy=stop` must end the run (the update was skipped, so
            the weights stay finite).
        stop: bool scalar: some process voted to stop (SIGTERM/SIGINT).
    """

    loss: tf.Tensor
    gradients: list[tf.Tensor]
    diverged: tf.Tensor
    stop: tf.Tensor


def all_finite(loss: tf.Tensor, gradients: list[tf.Tensor]) -> tf.Tensor:
    """Whether the loss and every element of `gradients` are finite (bool scalar)."""
    checks = [tf.reduce_all(tf.math.is_finite(loss))]
    checks += [tf.reduce_all(tf.math.is_finite(g)) for g in gradients]
    return tf.reduce_all(tf.stack(checks))


def guarded_gradients(gradients: list[tf.Tensor], biases: list[bool] | None
                      ) -> list[tf.Tensor]:
    """The gradients the non-finite guard must read for it to see every non-finite one.

    Reading every gradient costs a pass over all the parameters each step,
    about a sixth of a 256-128 step on a CPU. In an MLP the bias gradients
    suffice, given a finite loss: each layer's kernel gradient is
    `inputᵀ · delta` and its bias gradient the column sums of `delta`, so a
    non-finite `delta` shows in the bias gradient (a sum with a NaN or an
    infinity is not finite), and the inputs are finite (the first layer's are
    the table-normalised uint8 pixels; on AVX-512 CPUs oneDNN's fused
    MatMul+BiasAdd+Relu even maps a NaN activation to 0, a finite input).
    That argument needs inputs that cannot be non-finite and no float16
    overflow inside a matmul, so the step passes `biases=None` (read every
    gradient) for float or warped inputs, deskewing, float16 loss scaling and
    skipped steps.

    Args:
        gradients: one per `model.parameters()` entry.
        biases: whether each is a bias gradient; None: all are guarded.
    """
    if biases is None:
        return gradients
    return [g for g, bias in zip(gradients, biases) if bias]


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
    biases = [all(p is not k for k in kernels) for p in parameters]
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
        exhaustive = (getattr(images, "dtype", None) != tf.uint8 or augment is not None
                      or model.deskew or loss_scale.enabled or nan_policy != "stop")
        gradients, diverged, clipped = _apply(
            state, schedule, parameters, gradients, loss, nan_policy, clip_grad_norm,
            None if exhaustive else biases)
        with tf.name_scope("metrics"):
            metrics.add(total(loss_sum), total(correct), global_batch_size)
            if clip_grad_norm:
                metrics.add_clipped(clipped)
        # Any worker asked to stop makes every worker stop after this same
        # step; one stopping alone would leave the others waiting forever in
        # their next all-reduce.
        return StepOutput(loss, gradients, diverged, total(votes) > 0)

    return train_step


def _apply(state, schedule, parameters, gradients, loss, nan_policy, clip_grad_norm, biases):
    """Unscales, guards, clips and applies the gradients.

    With float16 loss scaling or `--nan_policy=skip_step`, a step whose loss
    or gradients are not all finite is skipped (weights, slots and Adam's
    step untouched) and counted; under loss scaling that is the normal
    overflow case and the scale halves. Under `stop` such a step is
    reported as diverged and the run ends at once with nothing saved after
    it, so its update needs no `tf.cond` (which would cost the fast path
    fusion); a non-finite loss is divergence under `stop` whatever the
    precision. The guard reads the loss and the gradients `guarded_gradients`
    picks (`biases`: which are bias gradients; None: all); with clipping, the
    global norm, which reads them all.

    The gradients are clipped after the unscaling and (under a strategy)
    after the all-reduce, so every replica applies the same update. Below
    the threshold the factor is exactly 1 and the update is bit-identical
    to an unclipped one.

    Returns:
        (the unscaled gradients, before clipping; diverged; whether they were
        clipped).
    """
    loss_scale, optimizer = state.loss_scale, state.optimizer
    gradients = loss_scale.unscale(gradients)
    skips = loss_scale.enabled or loss_scale.skip_nonfinite
    applied, clipped = gradients, tf.constant(False)
    with tf.name_scope("guard"):
        if clip_grad_norm:
            norm = tf.linalg.global_norm(gradients)
            finite = tf.logical_and(tf.reduce_all(tf.math.is_finite(loss)),
                                    tf.math.is_finite(norm))
        else:
            finite = all_finite(loss, guarded_gradients(gradients, biases))
        loss_scale.update(finite)
        if nan_policy != "stop":
            diverged = tf.constant(False)
        elif loss_scale.enabled:  # Overflowing gradients are loss scaling's business.
            diverged = tf.logical_not(tf.reduce_all(tf.math.is_finite(loss)))
        else:
            diverged = tf.logical_not(finite)
    if clip_grad_norm:
        with tf.name_scope("clip"):
            # tf.clip_by_global_norm's factor, left at 1 for a non-finite norm
            # (that step is skipped or ends the run).
            clipped = tf.logical_and(finite, norm > clip_grad_norm)
            factor = tf.where(clipped, clip_grad_norm / tf.maximum(norm, clip_grad_norm), 1.0)
            applied = [g * factor for g in gradients]

    def apply():
        optimizer.apply(applied, parameters, schedule(optimizer.step))
        if state.ema is not None:  # Once per applied update, in cross-replica context.
            state.ema.update(parameters, optimizer.step)
        return tf.constant(True)

    with tf.name_scope("adam"):
        if skips:
            tf.cond(finite, apply, lambda: tf.constant(False))
        else:
            apply()
    return gradients, diverged, clipped


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
