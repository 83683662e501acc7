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


def test_gaussian_smoothing_matrix_is_the_normalised_gaussian_filter():
    from mnist_tf.data.augment import gaussian_smoothing_matrix

    g = gaussian_smoothing_matrix(2.0)
    # Far from the border a row sums to 1 (the kernel is normalised)...
    np.testing.assert_allclose(g[14].sum(), 1.0, rtol=1e-4)
    # ...and smoothing a unit impulse gives the Gaussian's own weights.
    impulse = np.zeros(28, np.float32)
    impulse[14] = 1.0
    expected = np.exp(-((np.arange(28) - 14) ** 2) / 8.0) / (2.0 * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(g @ impulse, expected, rtol=1e-5)


def test_elastic_field_is_seeded_smooth_and_scaled_by_alpha():
    from mnist_tf.data.augment import elastic_displacement

    seed = tf.constant([7, 8], tf.int64)
    a = elastic_displacement(tf.constant(4), 10.0, 4.0, seed).numpy()
    b = elastic_displacement(tf.constant(4), 10.0, 4.0, seed).numpy()
    c = elastic_displacement(tf.constant(4), 10.0, 4.0, tf.constant([7, 9], tf.int64)).numpy()
    twice = elastic_displacement(tf.constant(4), 20.0, 4.0, seed).numpy()
    assert a.shape == (4, 784, 2)
    np.testing.assert_array_equal(a, b)  # Same seed, same field.
    assert not np.allclose(a, c)
    np.testing.assert_allclose(twice, 2 * a, rtol=1e-6)  # Linear in alpha.
    # Smooth: neighbouring pixels move almost together, far apart ones do not.
    field = a[..., 0].reshape(4, 28, 28)
    neighbours = np.abs(np.diff(field, axis=2)).mean()
    assert neighbours < 0.2 * np.abs(field).mean()
    assert np.abs(a).max() < 10.0  # Never beyond alpha: the smoothed noise is in (-1, 1).


def test_elastic_distortion_joins_the_affine_warp_in_one_resampling():
    from mnist_tf.data.augment import elastic_displacement

    images = tf.constant(np.repeat(blob(12, 13), 3, axis=0))
    seed = tf.constant([3, 4], tf.int64)
    affine_only = AffineAugment(10, 0.1, 2)
    elastic = AffineAugment(10, 0.1, 2, elastic_alpha=8.0, elastic_sigma=4.0)
    plain, warped = affine_only(images, seed).numpy(), elastic(images, seed).numpy()
    np.testing.assert_array_equal(warped, elastic(images, seed).numpy())  # Seeded.
    assert not np.allclose(plain, warped)
    # One resampling: the same as warp() with the affine draws and the field.
    u = tf.random.stateless_uniform([3, 4], seed, -1.0, 1.0)
    field = elastic_displacement(tf.constant(3), 8.0, 4.0,
                                 tf.random.experimental.stateless_fold_in(seed, 1))
    expected = warp(images, u[:, 0] * (10 * np.pi / 180), 1 + u[:, 1] * 0.1, u[:, 2:4] * 2,
                    field)
    np.testing.assert_allclose(warped, expected.numpy(), atol=1e-6)
    # A zero field is the affine warp itself.
    zero = warp(images, u[:, 0] * (10 * np.pi / 180), 1 + u[:, 1] * 0.1, u[:, 2:4] * 2,
                tf.zeros([3, 784, 2]))
    np.testing.assert_allclose(zero.numpy(), plain, atol=1e-6)


def test_elastic_distortion_is_the_same_under_xla():
    elastic = AffineAugment(10, 0.1, 2, elastic_alpha=8.0, elastic_sigma=4.0)
    images = tf.random.stateless_uniform([8, 784], seed=[0, 1])
    seed = tf.constant([1, 2], tf.int64)
    from mnist_tf.data.augment import elastic_displacement

    compiled = tf.function(elastic_displacement, jit_compile=True)
    np.testing.assert_allclose(compiled(tf.constant(8), 8.0, 4.0, seed).numpy(),
                               elastic_displacement(tf.constant(8), 8.0, 4.0, seed).numpy(),
                               atol=1e-5)
    out = tf.function(elastic, jit_compile=True)(images, seed).numpy()
    assert out.shape == (8, 784) and np.isfinite(out).all()
