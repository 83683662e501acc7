import re

import numpy as np
import pytest
import tensorflow as tf

from mnist_tf.model import losses
from mnist_tf.model.layers import Dense
from mnist_tf.model.mlp import MLP, layer_table, params_sha256


@pytest.fixture
def no_tf32():
    """Exact float32 matmuls (TensorFlow's default allows TF32 on Ampere+ GPUs)."""
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    yield
    tf.config.experimental.enable_tensor_float_32_execution(before)


def with_random_biases(model, seed=0):
    """Gives every layer a nonzero bias (they start at zero, which would hide bias bugs)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.bias.assign(rng.normal(0.0, 0.5, layer.bias.shape).astype(np.float32))
    return model


def reference_logits(model, images):
    """relu(x W + b) per hidden layer, then x W + b, in float64 NumPy from the model's weights."""
    x = np.asarray(images, np.float64)
    weights = [(layer.kernel.numpy().astype(np.float64), layer.bias.numpy().astype(np.float64))
               for layer in model.layers]
    for kernel, bias in weights[:-1]:
        x = np.maximum(x @ kernel + bias, 0.0)
    kernel, bias = weights[-1]
    return x @ kernel + bias


def test_dense_shapes_dtypes_and_output(no_tf32):
    rng = tf.random.Generator.from_seed(0)
    layer = Dense(5, 3, rng)
    assert layer.kernel.shape == (5, 3) and layer.kernel.dtype == tf.float32
    assert layer.bias.shape == (3,)
    kernel = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0], [3.0, 0.0, -1.0], [0.25, 0.25, 0.25],
                       [-1.0, 2.0, 0.0]], np.float32)
    layer.kernel.assign(kernel)
    layer.bias.assign([0.5, -1.0, 2.0])
    x = np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [0.0, -1.0, 0.5, 2.0, -2.0]], np.float32)
    # Worked by hand: row 1 is [1+0+9+1-5, -2+2+0+1+10, .5+2-3+1+0] + bias.
    expected = np.array([[6.5, 10.0, 2.5], [4.5, -5.5, 1.0]])
    output = layer(tf.constant(x))
    assert output.shape == (2, 3) and output.dtype == tf.float32
    np.testing.assert_allclose(output.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("hidden_sizes", [(), (64,), (128, 32)])
def test_mlp_forward_pass_matches_a_float64_reference(no_tf32, hidden_sizes):
    model = with_random_biases(MLP(hidden_sizes, seed=1))
    images = np.random.default_rng(2).uniform(0.0, 1.0, (16, 784)).astype(np.float32)
    expected = reference_logits(model, images)
    if hidden_sizes:  # Some hidden units are cut by the ReLU, or it would go untested.
        first = images.astype(np.float64) @ model.layers[0].kernel.numpy() + \
            model.layers[0].bias.numpy()
        assert 0.1 < (first < 0).mean() < 0.9
    logits = model(tf.constant(images))
    assert logits.dtype == tf.float32 and logits.shape == (16, 10)
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-5, atol=1e-5)
    # The traced call computes the same.
    np.testing.assert_allclose(tf.function(model)(tf.constant(images)).numpy(), expected,
                               rtol=1e-5, atol=1e-5)


def test_mlp_matches_keras_with_the_same_weights(no_tf32):
    import keras

    model = with_random_biases(MLP((64, 32), seed=3), seed=4)
    reference = keras.Sequential([
        keras.Input((784,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10),
    ])
    reference.set_weights([v.numpy() for v in model.parameters()])
    images = np.random.default_rng(5).uniform(0.0, 1.0, (32, 784)).astype(np.float32)
    np.testing.assert_allclose(model(tf.constant(images)).numpy(),
                               reference(images, training=False).numpy(), rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_stays_near_the_reference_and_returns_float32(no_tf32):
    model = with_random_biases(MLP((64,), seed=1, compute_dtype=tf.bfloat16))
    images = np.random.default_rng(6).uniform(0.0, 1.0, (16, 784)).astype(np.float32)
    expected = reference_logits(model, images)
    logits = model(tf.constant(images))
    assert logits.dtype == tf.float32
    # bfloat16 keeps 8 significant bits: close to the reference, but not float32-close.
    error = np.abs(logits.numpy() - expected).max()
    assert 1e-4 < error < 0.05 * np.abs(expected).max(), error


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


def test_layer_table_shows_the_default_model_as_keras_summary_would():
    assert layer_table(MLP((512, 256), seed=0, dropout=0.2)).splitlines() == [
        "layer     computes                  output shape  parameters",
        "input     28x28 pixels, flattened   [batch, 784]           0",
        "hidden_0  Dense, ReLU, dropout 0.2  [batch, 512]     401,920",
        "hidden_1  Dense, ReLU, dropout 0.2  [batch, 256]     131,328",
        "logits    Dense                     [batch, 10]        2,570",
        "total: 535,818 parameters (2.04 MiB): 535,818 trainable, 0 non-trainable"]


@pytest.mark.parametrize("hidden_sizes, dropout, compute_dtype", [
    ((), 0.0, tf.float32), ((64,), 0.5, tf.bfloat16), ((128, 32, 16), 0.0, tf.float16)])
def test_layer_table_rows_add_up_to_num_parameters(hidden_sizes, dropout, compute_dtype):
    model = MLP(hidden_sizes, seed=0, dropout=dropout, compute_dtype=compute_dtype)
    header, *rows, total = layer_table(model).splitlines()
    assert header.split() == ["layer", "computes", "output", "shape", "parameters"]
    assert [row.split()[0] for row in rows] == ["input", *(layer.name for layer in model.layers)]
    counts = [int(row.split()[-1].replace(",", "")) for row in rows]
    assert sum(counts) == model.num_parameters()
    assert counts[1:] == [int(np.prod(layer.kernel.shape)) + int(np.prod(layer.bias.shape))
                          for layer in model.layers]
    assert [re.search(r"\[batch, (\d+)\]", row)[1] for row in rows] == [
        str(size) for size in (784, *hidden_sizes, 10)]
    assert total.startswith(f"total: {model.num_parameters():,} parameters")
    assert total.endswith(f"{model.num_parameters():,} trainable, 0 non-trainable")
    assert ("dropout" in "".join(rows)) == bool(dropout and hidden_sizes)
    assert (compute_dtype.name in rows[-1]) == (compute_dtype != tf.float32)


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
