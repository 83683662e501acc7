import numpy as np
import tensorflow as tf

from mnist_tf.data.augment import AffineAugment, warp


def blob(row, col):
    image = np.zeros((28, 28), np.float32)
    image[row:row + 3, col:col + 2] = 1.0
    return image.reshape(1, 784)


def test_identity_warp_changes_nothing():
    images = tf.random.stateless_uniform([3, 784], seed=[1, 2])
    out = warp(images, tf.zeros([3]), tf.ones([3]), tf.zeros([3, 2]))
    np.testing.assert_allclose(out.numpy(), images.numpy(), atol=1e-6)


def test_integer_shift_moves_pixels_exactly():
    out = warp(tf.constant(blob(10, 10)), tf.zeros([1]), tf.ones([1]),
               tf.constant([[2.0, -3.0]])).numpy()
    np.testing.assert_allclose(out, blob(7, 12), atol=1e-6)


def test_rotation_by_90_degrees_turns_the_image():
    image = np.zeros((28, 28), np.float32)
    image[5, 5:23] = 1.0  # A horizontal bar near the top.
    out = warp(tf.constant(image.reshape(1, 784)), tf.constant([np.pi / 2]), tf.ones([1]),
               tf.zeros([1, 2])).numpy().reshape(28, 28)
    columns = np.nonzero(out.sum(axis=0) > 0.5)[0]
    rows = np.nonzero(out.sum(axis=1) > 0.5)[0]
    assert len(columns) == 1 and len(rows) >= 17  # Now a vertical bar.


def test_random_augment_is_seeded_bounded_and_varied():
    augment = AffineAugment(max_rotation_degrees=10, max_scale=0.1, max_shift_pixels=2)
    images = tf.constant(np.repeat(blob(12, 13), 4, axis=0))
    a = augment(images, tf.constant([3, 4]))
    b = augment(images, tf.constant([3, 4]))
    c = augment(images, tf.constant([3, 5]))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    assert len({row.tobytes() for row in a.numpy()}) == 4  # Each image its own warp.
    assert a.numpy().min() >= 0.0 and a.numpy().max() <= 1.0 + 1e-6
    # Mass is roughly preserved by small warps (scale within 10%).
    ratio = a.numpy().sum(axis=1) / images.numpy().sum(axis=1)
    assert np.all((ratio > 0.75) & (ratio < 1.3))


def test_compiles_with_xla():
    # Stateless random numbers differ between XLA and plain TF kernels, so
    # compare the deterministic warp exactly and the random one by its bounds.
    compiled_warp = tf.function(warp, jit_compile=True)
    images = tf.random.stateless_uniform([8, 784], seed=[0, 1])
    args = (tf.fill([8], 0.2), tf.fill([8], 1.1), tf.fill([8, 2], 1.5))
    np.testing.assert_allclose(compiled_warp(images, *args).numpy(),
                               warp(images, *args).numpy(), atol=1e-5)
    augment = tf.function(AffineAugment(), jit_compile=True)
    seed = tf.constant([1, 2], tf.int64)
    out = augment(images, seed).numpy()
    np.testing.assert_array_equal(out, augment(images, seed).numpy())
    assert out.shape == (8, 784) and out.min() >= 0.0 and out.max() <= 1.0 + 1e-6
