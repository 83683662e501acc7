import numpy as np
import pytest
import tensorflow as tf

from mnist_tf.model import losses
from mnist_tf.model.layers import Dense
from mnist_tf.model.mlp import MLP, params_sha256


def test_dense_shapes_dtypes_and_output():
    rng = tf.random.Generator.from_seed(0)
    layer = Dense(5, 3, rng)
    assert layer.kernel.shape == (5, 3) and layer.kernel.dtype == tf.float32
    assert layer.bias.shape == (3,)
    x = tf.ones([2, 5])
    np.testing.assert_allclose(layer(x).numpy(), (x @ layer.kernel + layer.bias).numpy())


def test_dense_rejects_bad_arguments():
    rng = tf.random.Generator.from_seed(0)
    with pytest.raises(ValueError, match="positive"):
        Dense(0, 3, rng)
    with pytest.raises(ValueError, match="initializer"):
        Dense(2, 3, rng, initializer="zeros")


def test_initialisers_have_the_documented_scale():
    rng = tf.random.Generator.from_seed(0)
    he = Dense(784, 512, rng, initializer="he_normal").kernel.numpy()
    assert he.std() == pytest.approx(np.sqrt(2 / 784), rel=0.02)
    glorot = Dense(256, 10, rng, initializer="glorot_uniform").kernel.numpy()
    limit = np.sqrt(6 / 266)
    assert glorot.max() <= limit and glorot.min() >= -limit
    assert glorot.std() == pytest.approx(limit / np.sqrt(3), rel=0.05)


def test_mlp_structure_and_parameter_count():
    model = MLP((512, 256), seed=0)
    assert [tuple(v.shape) for v in model.parameters()] == [
        (784, 512), (512,), (512, 256), (256,), (256, 10), (10,)]
    assert model.num_parameters() == 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10
    # Seed 003's 32-64 network has 27,882 parameters, as its README says.
    assert MLP((32, 64), seed=0).num_parameters() == 27882
    logits = model(tf.zeros([4, 784]))
    assert logits.shape == (4, 10) and logits.dtype == tf.float32
    assert len(model.trainable_variables) == 6


def test_linear_model_without_hidden_layers():
    model = MLP((), seed=0)
    assert [tuple(v.shape) for v in model.parameters()] == [(784, 10), (10,)]


def test_same_seed_same_weights_other_seed_other_weights():
    assert params_sha256(MLP((16,), seed=3)) == params_sha256(MLP((16,), seed=3))
    assert params_sha256(MLP((16,), seed=3)) != params_sha256(MLP((16,), seed=4))


def test_params_sha256_covers_every_parameter_in_order():
    model = MLP((8,), seed=0)
    before = params_sha256(model)
    model.layers[-1].bias.assign_add(tf.one_hot(9, 10) * 1e-6)
    assert params_sha256(model) != before
    import hashlib
    digest = hashlib.sha256()
    for v in (model.layers[0].kernel, model.layers[0].bias,
              model.layers[1].kernel, model.layers[1].bias):
        digest.update(v.numpy().astype("<f4").tobytes())
    assert params_sha256(model) == digest.hexdigest()


def test_dropout_only_in_training_and_reproducible():
    model = MLP((64,), seed=0, dropout=0.5)
    x = tf.random.stateless_uniform([8, 784], seed=[1, 2])
    np.testing.assert_array_equal(model(x).numpy(), model(x, training=False).numpy())
    seed = tf.constant([7, 0], tf.int64)
    a = model(x, training=True, seed=seed).numpy()
    b = model(x, training=True, seed=seed).numpy()
    c = model(x, training=True, seed=tf.constant([8, 0], tf.int64)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, model(x).numpy())
    with pytest.raises(ValueError, match="seed"):
        model(x, training=True)


def test_cross_entropy_matches_log_softmax():
    logits = tf.constant([[2.0, 1.0, 0.1], [0.0, 0.0, 5.0]])
    labels = tf.constant([0, 1])
    z = logits.numpy()
    log_softmax = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    expected = -log_softmax[[0, 1], [0, 1]]
    np.testing.assert_allclose(losses.cross_entropy(logits, labels).numpy(), expected, rtol=1e-6)


def test_cross_entropy_of_float16_logits_is_finite_float32():
    # exp(20) overflows float16; the loss casts to float32 first.
    logits = tf.constant([[20.0, -20.0]], tf.float16)
    loss = losses.cross_entropy(logits, tf.constant([1]))
    assert loss.dtype == tf.float32
    assert np.isfinite(loss.numpy()).all()
    assert loss.numpy()[0] == pytest.approx(40.0, rel=1e-3)


def test_total_loss_adds_weight_decay():
    kernels = [tf.Variable([[1.0, 2.0]]), tf.Variable([[3.0]])]
    logits = tf.zeros([2, 10])
    labels = tf.constant([0, 1])
    plain, per_example = losses.total_loss(logits, labels, kernels, 0.0)
    decayed, _ = losses.total_loss(logits, labels, kernels, 0.1)
    np.testing.assert_allclose(plain.numpy(), np.log(10.0), rtol=1e-6)
    np.testing.assert_allclose(per_example.numpy(), [np.log(10.0)] * 2, rtol=1e-6)
    # 0.1 * (1 + 4 + 9) / 2
    np.testing.assert_allclose((decayed - plain).numpy(), 0.7, rtol=1e-6)


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from mnist_tf import files, images

    files.write_json_atomic(tmp_path / "a.json", {"x": 1})
    images.write_png(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    mask = os.umask(0)
    os.umask(mask)
    for name in ("a.json", "a.png"):
        mode = stat.S_IMODE(os.stat(tmp_path / name).st_mode)
        assert mode == 0o666 & ~mask, oct(mode)
    assert sorted(os.listdir(tmp_path)) == ["a.json", "a.png"]
