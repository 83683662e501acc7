"""The hash-based dropout: right keep rate, independent of seed, same with XLA."""

import numpy as np
import pytest
import tensorflow as tf

from mnist_tf.model.dropout import dropout, keep_mask


def mask(rate, seed, n=200_000):
    return keep_mask(tf.TensorShape([n]), rate, tf.constant(seed, tf.int64)).numpy()


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.5, 0.9])
def test_keep_fraction_matches_rate(rate):
    kept = mask(rate, [3, 4]).mean()
    # 200k Bernoulli draws: the standard error is at most 0.0012.
    assert abs(kept - (1 - rate)) < 0.006


def test_masks_of_different_seeds_are_uncorrelated():
    base = mask(0.5, [1, 2])
    # Each seed word (including the high half of an int64) changes the mask.
    for other in ([1, 3], [2, 2], [1 + 2**40, 2], [1, 2 + 2**40]):
        agreement = (base == mask(0.5, other)).mean()
        assert abs(agreement - 0.5) < 0.01, other
    # Neighbouring elements are not correlated either.
    assert abs(np.corrcoef(base[:-1], base[1:])[0, 1]) < 0.01


def test_same_mask_with_and_without_xla():
    x = tf.random.stateless_normal([64, 300], seed=[0, 1])
    seed = tf.constant([7, 9], tf.int64)
    eager = dropout(x, 0.3, seed)
    compiled = tf.function(dropout, jit_compile=True)(x, 0.3, seed)
    np.testing.assert_array_equal(eager.numpy(), compiled.numpy())


def test_inverted_scaling_and_zero_rate():
    x = tf.ones([1000, 100])
    y = dropout(x, 0.25, tf.constant([5, 6], tf.int64)).numpy()
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert abs(y.mean() - 1.0) < 0.01
    assert dropout(x, 0.0, tf.constant([5, 6], tf.int64)) is x


def test_bfloat16_input_keeps_dtype():
    x = tf.ones([8, 8], tf.bfloat16)
    assert dropout(x, 0.5, tf.constant([1, 1], tf.int64)).dtype == tf.bfloat16


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_rejects_rates_outside_unit_interval(rate):
    with pytest.raises(ValueError, match="dropout rate"):
        dropout(tf.ones([2]), rate, tf.constant([0, 0], tf.int64))


def test_a_batch_of_unknown_size_gets_the_same_masks():
    # tf.distribute's per-replica batches have no static batch size.
    x = tf.ones([6, 5])
    seed = tf.constant([3, 4], tf.int64)
    dynamic = tf.function(lambda x: dropout(x, 0.5, seed),
                          input_signature=[tf.TensorSpec([None, 5], tf.float32)])
    np.testing.assert_array_equal(dynamic(x).numpy(), dropout(x, 0.5, seed).numpy())
