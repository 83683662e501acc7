"""--precision: reduced-precision compute, float32 master weights, dynamic loss scaling."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_usage_error, run_module, synthetic_digits
from test_trainer import scalar_tags

from mnist_tf.config import ConfigError, TrainConfig
from mnist_tf.model import losses, precision
from mnist_tf.model.mlp import MLP
from mnist_tf.model.schedules import make_schedule
from mnist_tf.training import trainer
from mnist_tf.training.state import TrainState
from mnist_tf.training.steps import Metrics, make_train_step
from mnist_tf.workdir import SUMMARY_SUBDIR

BATCH = 64


def batch(seed=0):
    images, labels = synthetic_digits(BATCH, seed=seed)
    return (tf.constant(images.reshape(BATCH, 784), tf.float32) / 255.0,
            tf.constant(labels, tf.int32))


def gradients(name):
    model = MLP((64, 32), seed=3, compute_dtype=precision.policy(name).compute_dtype)
    images, labels = batch()
    with tf.GradientTape() as tape:
        loss, _ = losses.total_loss(model(images), labels, model.kernels(), 0.0)
    return loss, tape.gradient(loss, model.parameters())


@pytest.mark.parametrize("name, tolerance", [("mixed_bfloat16", 0.05), ("mixed_float16", 0.01)])
def test_one_steps_gradients_are_close_to_float32s(name, tolerance):
    loss32, grads32 = gradients("float32")
    loss, grads = gradients(name)
    assert loss.dtype == tf.float32  # Softmax and loss in float32.
    assert abs(float(loss) - float(loss32)) < tolerance * float(loss32)
    for g, g32 in zip(grads, grads32):
        assert g.dtype == tf.float32  # Gradients of the float32 master weights.
        error = np.linalg.norm(g.numpy() - g32.numpy()) / np.linalg.norm(g32.numpy())
        assert error < tolerance, error
    # The reduced precision really is used: the results are not bit-identical.
    assert any(not np.array_equal(g.numpy(), g32.numpy()) for g, g32 in zip(grads, grads32))


def test_layers_compute_in_the_policys_dtype():
    model = MLP((8,), seed=0, compute_dtype=tf.bfloat16)
    hidden = model.layers[0](tf.zeros([2, 784]))
    assert hidden.dtype == tf.bfloat16
    assert model.layers[0].kernel.dtype == tf.float32
    assert model(tf.zeros([2, 784])).dtype == tf.float32


def float16_step(growth_interval=2000):
    state = TrainState(TrainConfig(hidden_sizes=(32,), precision="mixed_float16"))
    state.loss_scale = precision.LossScale(enabled=True, growth_interval=growth_interval)
    body = make_train_step(state, make_schedule("constant", 1e-3, 0, 100), Metrics(), BATCH)
    step = tf.function(lambda images, labels: body(images, labels, tf.constant(0)))
    return state.model, state.optimizer, state.loss_scale, step


def snapshot(model, optimizer):
    return [v.numpy().copy() for v in (*model.parameters(), *optimizer.m, *optimizer.v)]


def test_a_non_finite_gradient_skips_the_update_and_halves_the_scale():
    model, optimizer, loss_scale, step = float16_step()
    assert float(loss_scale.scale) == 2.0**15
    images, labels = batch()
    step(images, labels)  # One clean step: Adam's state moves.
    assert int(optimizer.step) == 1 and int(loss_scale.good_steps) == 1
    before = snapshot(model, optimizer)
    poisoned = tf.tensor_scatter_nd_update(images, [[0, 0]], [np.inf])
    grads = step(poisoned, labels).gradients
    assert not all(np.isfinite(g.numpy()).all() for g in grads)
    after = snapshot(model, optimizer)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert int(optimizer.step) == 1  # Adam's step untouched.
    assert float(loss_scale.scale) == 2.0**14
    assert int(loss_scale.good_steps) == 0 and int(loss_scale.skipped_steps) == 1


def test_the_scale_doubles_after_the_growth_interval_of_clean_steps():
    _, optimizer, loss_scale, step = float16_step(growth_interval=3)
    images, labels = batch()
    for expected_good in (1, 2):
        step(images, labels)
        assert float(loss_scale.scale) == 2.0**15
        assert int(loss_scale.good_steps) == expected_good
    step(images, labels)
    assert float(loss_scale.scale) == 2.0**16 and int(loss_scale.good_steps) == 0
    assert int(optimizer.step) == 3 and int(loss_scale.skipped_steps) == 0


def test_without_loss_scaling_the_scale_is_inert():
    scale = precision.LossScale(enabled=False)
    scale.update(tf.constant(False))
    assert float(scale.scale) == 1.0 and int(scale.skipped_steps) == 0
    assert scale.scale_loss(tf.constant(2.0)).numpy() == 2.0


def test_the_scale_survives_save_and_restore(tmp_path):
    scale = precision.LossScale(enabled=True)
    scale.update(tf.constant(False))
    scale.update(tf.constant(True))
    path = tf.train.Checkpoint(loss_scale=scale).save(str(tmp_path / "ckpt"))
    restored = precision.LossScale(enabled=True)
    tf.train.Checkpoint(loss_scale=restored).restore(path).assert_consumed()
    assert float(restored.scale) == 2.0**14
    assert int(restored.good_steps) == 1 and int(restored.skipped_steps) == 1


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="--precision: unknown precision 'float8'"):
        TrainConfig(precision="float8")


def test_cli_rejects_an_unknown_precision(tmp_path):
    result = run_module("mnist_tf.train", f"--workdir={tmp_path}", "--precision=fp16")
    assert_usage_error(result, "--precision", "fp16", "mixed_float16")


# Without XLA (the default): these tests need the arithmetic, and compiling would
# double their time; the XLA path has tests of its own.
SMALL = dict(jit_compile=False, hidden_sizes=(64,), batch_size=32, epochs=4, validation_size=100,
             learning_rate=3e-3, log_every_steps=5, checkpoint_every_steps=30,
             eval_batch_size=64, histogram_every_steps=0)


def test_each_precision_trains_to_float32s_accuracy_and_logs_it(tmp_path, small_data_dir):
    accuracies = {}
    for name in ("float32", "mixed_bfloat16", "mixed_float16"):
        lines = []
        results = trainer.train_and_evaluate(
            TrainConfig(**SMALL, precision=name), str(tmp_path / name),
            data_dir=small_data_dir, allow_download=False, log=lines.append)
        accuracies[name] = results["test_accuracy"]
        assert any(line.startswith(f"Precision: {name}") for line in lines)
        assert any(line.startswith("Device: /") for line in lines)  # The device in use.
        assert results["flags"]["precision"] == name
    assert accuracies["float32"] > 0.9
    for name in ("mixed_bfloat16", "mixed_float16"):
        assert abs(accuracies[name] - accuracies["float32"]) <= 0.03, accuracies
    flags = json.loads((tmp_path / "mixed_float16" / "results.json").read_text())["flags"]
    assert flags["precision"] == "mixed_float16"
    # The loss scale is in TensorBoard (float16 only).
    assert {"loss_scale", "skipped_steps"} <= scalar_tags(
        tmp_path / "mixed_float16" / SUMMARY_SUBDIR / "train")
    assert "loss_scale" not in scalar_tags(tmp_path / "float32" / SUMMARY_SUBDIR / "train")
