"""Loss: from-logits sparse softmax cross-entropy (float32) plus optional L2."""

from __future__ import annotations

import tensorflow as tf


def cross_entropy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Per-example softmax cross-entropy, computed in float32.

    Args:
        logits: [batch, classes] unnormalised scores (any float dtype; cast to
            float32 first, since softmax in float16 overflows).
        labels: [batch] integer class ids.

    Returns:
        float32 [batch] losses.
    """
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=tf.cast(logits, tf.float32)
    )


def l2_penalty(kernels: list[tf.Variable]) -> tf.Tensor:
    """0.5 * sum of squared weights (`tf.nn.l2_loss`), the classic weight-decay term."""
    return tf.add_n([tf.nn.l2_loss(tf.cast(k, tf.float32)) for k in kernels])


def total_loss(
    logits: tf.Tensor,
    labels: tf.Tensor,
    kernels: list[tf.Variable],
    weight_decay: float,
    global_batch_size: int | None = None,
    num_replicas: int = 1,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean cross-entropy over the (global) batch plus `weight_decay` * L2.

    Args:
        logits: [batch, classes] of this replica's examples.
        labels: [batch] integer class ids.
        kernels: the weight matrices L2 applies to.
        weight_decay: the L2 coefficient.
        global_batch_size: examples per step over all replicas (only read
            when `num_replicas` > 1).
        num_replicas: replicas whose losses are summed. With several, each
            replica's cross-entropy is divided by the *global* batch size
            (`tf.nn.compute_average_loss`) and its L2 share by the replica
            count, so the sum over replicas is the global batch's loss.

    Returns:
        (this replica's loss to minimise, per-example cross-entropy), both
        float32.
    """
    per_example = cross_entropy(logits, labels)
    if num_replicas == 1:
        loss = tf.reduce_mean(per_example)
    else:
        loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
    if weight_decay:
        penalty = weight_decay * l2_penalty(kernels)
        loss += penalty if num_replicas == 1 else penalty / num_replicas
    return loss, per_example
