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
    logits: tf.Tensor, labels: tf.Tensor, kernels: list[tf.Variable], weight_decay: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean cross-entropy over the batch plus `weight_decay` * L2.

    Returns:
        (loss to minimise, per-example cross-entropy), both float32.
    """
    per_example = cross_entropy(logits, labels)
    loss = tf.reduce_mean(per_example)
    if weight_decay:
        loss += weight_decay * l2_penalty(kernels)
    return loss, per_example
