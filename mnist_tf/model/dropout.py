"""Dropout whose masks come from a counter-based hash (`mnist_tf/random_hash.py`).

Not `tf.nn.experimental.stateless_dropout`: TensorFlow's stateless random
kernels compile to slow code on XLA's CPU backend (12,454 us vs 29 us for a
128x512 mask), which made `--jit_compile` with dropout ~10x slower than
without. A mask here is a pure function of (seed, element index), the same
with and without XLA, on any device. An element is kept when its hash is at
least `rate * 2**32`, so the keep probability is exact to 2**-32.
"""

from __future__ import annotations

import tensorflow as tf

from mnist_tf.random_hash import random_bits


def keep_mask(shape: tf.TensorShape | tf.Tensor, rate: float, seed: tf.Tensor) -> tf.Tensor:
    """Bool mask of `shape`, each element True with probability 1 - rate.

    Args:
        shape: shape of the mask (at most 2**32 elements): a static shape,
            or an int32 shape tensor where the batch size is only known at run
            time (tf.distribute's per-replica batches).
        rate: drop probability in [0, 1).
        seed: int [2]; the mask is a pure function of (seed, shape, rate).
    """
    if isinstance(shape, tf.TensorShape):
        size = shape.num_elements()
    else:
        size = tf.reduce_prod(shape)
    bits = random_bits(size, seed)
    threshold = tf.constant(min(int(rate * 2**32), 2**32 - 1), tf.uint32)
    return tf.reshape(bits >= threshold, shape)


def dropout(x: tf.Tensor, rate: float, seed: tf.Tensor) -> tf.Tensor:
    """Inverted dropout: zeroes each element with probability `rate`, scales the rest by 1/(1-rate).

    Args:
        x: a tensor.
        rate: drop probability in [0, 1).
        seed: int [2] seed of the mask.

    Returns:
        A tensor like x; its expectation equals x.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    if rate == 0.0:
        return x
    scale = tf.constant(1.0 / (1.0 - rate), x.dtype)
    shape = x.shape if x.shape.is_fully_defined() else tf.shape(x)
    return tf.where(keep_mask(shape, rate, seed), x * scale, tf.zeros_like(x))
