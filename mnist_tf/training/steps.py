"""The traced train step and eval step, and the metric accumulators they update."""

from __future__ import annotations

import tensorflow as tf

from mnist_tf.constants import NUM_PIXELS
from mnist_tf.data.augment import AffineAugment
from mnist_tf.model import losses
from mnist_tf.model.mlp import MLP
from mnist_tf.model.optimizers import Adam
from mnist_tf.model.precision import LossScale


class Metrics(tf.Module):
    """Running sums of loss, correct predictions and examples, kept in variables.

    The traced steps only `assign_add` into them, so reading them (which syncs
    with the device) happens once per log interval, not once per step.
    """

    def __init__(self, name: str | None = None):
        super().__init__(name=name)
        with self.name_scope:
            self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="loss_sum")
            self.correct = tf.Variable(0, dtype=tf.int64, trainable=False, name="correct")
            self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="count")

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

    def result(self) -> dict[str, float]:
        """Returns {"loss", "accuracy", "count"} as Python numbers (syncs with the device)."""
        count = int(self.count.numpy())
        if count == 0:
            return {"loss": float("nan"), "accuracy": float("nan"), "count": 0}
        return {
            "loss": float(self.loss_sum.numpy()) / count,
            "accuracy": int(self.correct.numpy()) / count,
            "count": count,
        }

    def reset(self) -> None:
        """Zeroes the sums."""
        for variable in (self.loss_sum, self.correct, self.count):
            variable.assign(tf.zeros_like(variable))


def make_train_step(
    model: MLP,
    optimizer: Adam,
    schedule,
    rng: tf.random.Generator,
    metrics: Metrics,
    batch_size: int,
    weight_decay: float = 0.0,
    jit_compile: bool = False,
    augment: AffineAugment | None = None,
    loss_scale: LossScale | None = None,
) -> tf.types.experimental.PolymorphicFunction:
    """Builds the one traced training step: (augment,) forward, loss, gradients, Adam.

    Args:
        model: the model; its `parameters()` are trained.
        optimizer: Adam holding the slots for those parameters.
        schedule: maps the int64 step to the float32 learning rate.
        rng: dropout seeds are drawn from it (it is checkpointed).
        metrics: training-loss/accuracy accumulators.
        batch_size: static batch size of every call.
        weight_decay: L2 coefficient on the kernels.
        jit_compile: compile the step with XLA.
        augment: if given, warps each batch with seeds drawn from `rng`.
        loss_scale: dynamic loss scaling (float16); None: none.

    Returns:
        A `tf.function` taking (images float32 [batch, 784], labels int32
        [batch]) and returning `(loss, gradients)`: the scalar loss and the
        gradients Adam just applied, one per `model.parameters()` entry. Its
        fixed input signature means it is traced exactly once.
    """
    train_step = _train_step_fn(model, optimizer, schedule, rng, metrics, weight_decay, augment,
                                loss_scale)
    signature = [
        tf.TensorSpec([batch_size, NUM_PIXELS], tf.float32, name="images"),
        tf.TensorSpec([batch_size], tf.int32, name="labels"),
    ]
    return tf.function(train_step, input_signature=signature, jit_compile=jit_compile,
                       autograph=False)


def _apply(optimizer, schedule, parameters, gradients, loss_scale):
    """Unscales the gradients, updates the loss scale and applies Adam; returns the gradients.

    With loss scaling or `--nan_policy=skip_step`, a step whose gradients are
    not all finite is skipped: weights, slots and Adam's step untouched.
    """
    if loss_scale is not None and loss_scale.enabled:
        gradients = loss_scale.unscale(gradients)
    if loss_scale is None or not loss_scale.guards:
        with tf.name_scope("adam"):
            optimizer.apply(gradients, parameters, schedule(optimizer.step))
        return gradients
    with tf.name_scope("loss_scale"):
        finite = loss_scale.update(gradients)

    def apply():
        optimizer.apply(gradients, parameters, schedule(optimizer.step))
        return tf.constant(True)

    with tf.name_scope("adam"):
        tf.cond(finite, apply, lambda: tf.constant(False))
    return gradients


def _train_step_fn(model, optimizer, schedule, rng, metrics, weight_decay, augment,
                   loss_scale=None):
    """The Python body of one training step, shared by both traced forms."""
    scaling = loss_scale is not None and loss_scale.enabled
    parameters = model.parameters()
    kernels = model.kernels()
    use_dropout = model.dropout > 0.0

    def train_step(images, labels):
        # The name scopes fold the graph into these blocks in TensorBoard's Graphs tab.
        # Draw the dropout seed outside the tape: it is not differentiable state.
        with tf.name_scope("dropout_seed"):
            seed = rng.make_seeds(1)[:, 0] if use_dropout else None
        if augment is not None:
            # Drawn after the dropout seed, so that runs without augmentation
            # draw exactly the seeds they drew before it existed.
            with tf.name_scope("augment"):
                images = augment(images, rng.make_seeds(1)[:, 0])
        with tf.GradientTape() as tape:
            with tf.name_scope("forward"):
                logits = model(images, training=True, seed=seed)
            with tf.name_scope("loss"):
                loss, per_example = losses.total_loss(logits, labels, kernels, weight_decay)
                scaled_loss = loss_scale.scale_loss(loss) if scaling else loss
        # float32 gradients whatever the compute dtype: the variables are float32
        # and the gradient of their cast casts back.
        gradients = tape.gradient(scaled_loss, parameters)
        gradients = _apply(optimizer, schedule, parameters, gradients, loss_scale)
        with tf.name_scope("metrics"):
            metrics.update(per_example, logits, labels)
        # The gradients are returned for the TensorBoard histograms rather than
        # recomputed by a second function when needed: these are exactly the
        # ones Adam applied (same batch, same dropout mask); a recomputation
        # would need a second traced function that re-runs the forward pass
        # without drawing from `rng` or touching any state (else bit-exact
        # resumption breaks). The price, measured on 2 CPU cores: 0-5% of an
        # isolated 512-256 step (best of 10: 1.93 vs 1.82 ms), lost in the
        # noise of a whole run.
        return loss, gradients

    return train_step


def make_train_loop(
    model: MLP,
    optimizer: Adam,
    schedule,
    rng: tf.random.Generator,
    metrics: Metrics,
    batch_size: int,
    images: tf.Tensor,
    labels: tf.Tensor,
    weight_decay: float = 0.0,
    jit_compile: bool = False,
    augment: AffineAugment | None = None,
    loss_scale: LossScale | None = None,
) -> tf.types.experimental.PolymorphicFunction:
    """Builds a traced loop of training steps over data held as tensors.

    Each call runs `count` optimizer steps of the same step body as
    `make_train_step`, gathering batch `first_batch + i` of `order`; Python and
    dispatch overhead is paid once per call instead of once per step, and with
    `jit_compile` XLA compiles the whole loop.

    Args:
        model: the model; its `parameters()` are trained.
        optimizer: Adam holding the slots for those parameters.
        schedule: maps the int64 step to the float32 learning rate.
        rng: dropout seeds are drawn from it (it is checkpointed).
        metrics: training-loss/accuracy accumulators.
        batch_size: examples per step.
        images: float32 [N, 784], the whole training split.
        labels: int32 [N].
        weight_decay: L2 coefficient on the kernels.
        jit_compile: compile the loop with XLA.
        augment: if given, warps each batch with seeds drawn from `rng`.
        loss_scale: dynamic loss scaling (float16); None: none.

    Returns:
        A `tf.function` taking (order int32 [N], first_batch int32 scalar,
        count int32 scalar) and returning the last step's `(loss, gradients)`.
        Every argument is a tensor of fixed shape, so it is traced once.
    """
    train_step = _train_step_fn(model, optimizer, schedule, rng, metrics, weight_decay, augment,
                                loss_scale)
    num_examples = int(images.shape[0])
    zero_gradients = [tf.zeros_like(p) for p in model.parameters()]
    positions = tf.range(batch_size, dtype=tf.int32)

    def train_loop(order, first_batch, count):
        def body(i, loss, gradients):
            # A gather, not tf.slice: XLA treats a slice's start as a compile-time
            # constant and would recompile for every new `first_batch`.
            index = tf.gather(order, (first_batch + i) * batch_size + positions)
            loss, gradients = train_step(tf.gather(images, index), tf.gather(labels, index))
            return i + 1, loss, gradients

        # A while loop on a tensor `count`: `tf.range(count)` would make XLA want
        # `count` as a compile-time constant (one compilation per distinct count).
        _, loss, gradients = tf.while_loop(
            lambda i, loss, gradients: i < count, body,
            (tf.constant(0, tf.int32), tf.constant(0.0), zero_gradients))
        return loss, gradients

    signature = [
        tf.TensorSpec([num_examples], tf.int32, name="order"),
        tf.TensorSpec([], tf.int32, name="first_batch"),
        tf.TensorSpec([], tf.int32, name="count"),
    ]
    return tf.function(train_loop, input_signature=signature, jit_compile=jit_compile,
                       autograph=False)


def make_distributed_train_step(
    strategy: tf.distribute.Strategy,
    model: MLP,
    optimizer: Adam,
    schedule,
    rng: tf.random.Generator,
    metrics: Metrics,
    global_batch_size: int,
    weight_decay: float = 0.0,
    augment: AffineAugment | None = None,
    loss_scale: LossScale | None = None,
) -> tf.types.experimental.PolymorphicFunction:
    """Builds the training step for a `tf.distribute` strategy.

    Each replica computes the gradients of its share of the global batch,
    with the loss averaged over the *global* batch
    (`tf.nn.compute_average_loss`), so that the SUM of the replicas'
    gradients (`strategy.reduce`) is the gradient of the global batch's mean
    loss. Adam then applies that sum once, in cross-replica context, which
    updates every replica's copy of the mirrored variables alike.

    Args:
        strategy: the strategy whose scope created the model, optimizer and
            loss-scale variables.
        model: the model; its `parameters()` are trained.
        optimizer: Adam holding the slots for those parameters.
        schedule: maps the int64 step to the float32 learning rate.
        rng: dropout and augmentation seeds are drawn from it, once per step
            in cross-replica context; each replica offsets them by its id.
        metrics: training-loss/accuracy accumulators (updated with sums).
        global_batch_size: examples per step over all replicas.
        weight_decay: L2 coefficient on the kernels.
        augment: if given, warps each batch.
        loss_scale: dynamic loss scaling (float16); None: none.

    Returns:
        A `tf.function` taking an iterator over the strategy's distributed
        dataset (global batches of (images, labels)) and this process's stop
        vote (int32 scalar, 1 after a SIGTERM/SIGINT), and returning the
        global mean loss, the applied (summed) gradients, and whether any
        process voted to stop.
    """
    parameters = model.parameters()
    kernels = model.kernels()
    use_dropout = model.dropout > 0.0
    scaling = loss_scale is not None and loss_scale.enabled
    replicas = strategy.num_replicas_in_sync

    def replica_step(images, labels, dropout_seed, augment_seed, stop_vote):
        replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group,
                          tf.int64)
        # Different masks and warps on each replica's examples.
        offset = tf.stack([replica, tf.constant(0, tf.int64)])
        if augment is not None:
            images = augment(images, augment_seed + offset)
        with tf.GradientTape() as tape:
            logits = model(images, training=True,
                           seed=dropout_seed + offset if use_dropout else None)
            per_example = losses.cross_entropy(logits, labels)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
            if weight_decay:
                # Once in the sum over replicas.
                loss += weight_decay * losses.l2_penalty(kernels) / replicas
            scaled_loss = loss_scale.scale_loss(loss) if scaling else loss
        gradients = tape.gradient(scaled_loss, parameters)
        correct = tf.reduce_sum(tf.cast(
            tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.int64))
        # tf.identity: a per-replica value, so the SUM below spans every process.
        return gradients, loss, tf.reduce_sum(per_example), correct, tf.identity(stop_vote)

    def train_step(iterator, stop_vote):
        images, labels = next(iterator)
        # The same draws, in the same order, as the single-device step.
        no_seed = tf.zeros([2], tf.int64)
        dropout_seed = rng.make_seeds(1)[:, 0] if use_dropout else no_seed
        augment_seed = rng.make_seeds(1)[:, 0] if augment is not None else no_seed
        gradients, loss, loss_sum, correct, stop_votes = strategy.run(
            replica_step, args=(images, labels, dropout_seed, augment_seed, stop_vote))

        def total(value):
            if replicas == 1:
                return value  # One replica in all: its value is already the total.
            return strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)

        gradients = [total(g) for g in gradients]
        loss = total(loss)
        gradients = _apply(optimizer, schedule, parameters, gradients, loss_scale)
        metrics.add(total(loss_sum), total(correct), global_batch_size)
        # Any worker asked to stop (SIGTERM) makes every worker stop after this
        # same step; one stopping alone would leave the others waiting forever
        # in their next all-reduce.
        return loss, gradients, total(stop_votes) > 0

    return tf.function(train_step, autograph=False)


def make_eval_step(
    model: MLP, metrics: Metrics, batch_size: int, jit_compile: bool = False
) -> tf.types.experimental.PolymorphicFunction:
    """Builds the one traced eval step: forward pass and masked metric update.

    Returns:
        A `tf.function` taking (images [batch, 784], labels [batch], mask
        [batch] bool), updating `metrics` and returning the predicted classes,
        int32 [batch] (padding rows included; the caller applies `mask`).
        Traced exactly once.
    """

    def eval_step(images, labels, mask):
        logits = model(images, training=False)
        metrics.update(losses.cross_entropy(logits, labels), logits, labels, mask)
        # Returned so one pass over a split yields both the metrics and what the
        # confusion matrix and misclassified-digit images need.
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    signature = [
        tf.TensorSpec([batch_size, NUM_PIXELS], tf.float32, name="images"),
        tf.TensorSpec([batch_size], tf.int32, name="labels"),
        tf.TensorSpec([batch_size], tf.bool, name="mask"),
    ]
    return tf.function(eval_step, input_signature=signature, jit_compile=jit_compile,
                       autograph=False)
