"""--clip_grad_norm and gradient health: the global norm, clipping, and their summaries.

Clipping under tf.distribute (on the all-reduced gradients) is checked by
test_distribute.py, whose runs all clip: a mirrored run matches the one-device
run only if every replica clips the global batch's gradients alike.
"""

import numpy as np
import pytest
import tensorflow as tf
from conftest import synthetic_digits
from tensorboard.backend.event_processing import event_accumulator
from test_trainer import FAST, run

from mnist_tf.config import TrainConfig
from mnist_tf.model import losses
from mnist_tf.model.schedules import make_schedule
from mnist_tf.training.state import TrainState
from mnist_tf.training.steps import Metrics, make_train_step
from mnist_tf.workdir import SUMMARY_SUBDIR

BATCH = 64
LEARNING_RATE = 1e-3


def batch():
    images, labels = synthetic_digits(BATCH, seed=4)
    return tf.constant(images.reshape(BATCH, -1), tf.uint8), tf.constant(labels, tf.int32)


def one_step(clip=0.0, precision="float32"):
    """A fresh state after one traced step; returns (state, the step's output, metrics)."""
    state = TrainState(TrainConfig(hidden_sizes=(32,), precision=precision, seed=5))
    metrics = Metrics(gradients=True, clipping=bool(clip))
    body = make_train_step(state, make_schedule("constant", LEARNING_RATE, 0, 100), metrics,
                           BATCH, clip_grad_norm=clip)
    output = tf.function(lambda images, labels: body(images, labels, tf.constant(0)))(*batch())
    return state, output, metrics.result()


def hand_gradients():
    """The first step's float32 gradients, computed here, and their global norm."""
    state = TrainState(TrainConfig(hidden_sizes=(32,), seed=5))
    images, labels = batch()
    with tf.GradientTape() as tape:
        logits = state.model(tf.cast(tf.reshape(images, [BATCH, -1]), tf.float32) / 255.0)
        loss, _ = losses.total_loss(logits, labels, state.model.kernels(), 0.0, BATCH)
    gradients = tape.gradient(loss, state.model.parameters())
    return state, gradients, float(tf.linalg.global_norm(gradients))


def test_the_norm_is_measured_and_a_clipped_step_applies_the_hand_clipped_update():
    hand, gradients, norm = hand_gradients()
    clip = norm / 4
    state, output, health = one_step(clip)
    assert health["grad_norm"] == pytest.approx(norm, rel=1e-5)  # Measured before clipping.
    assert health["clipped_fraction"] == 1.0
    # The update is Adam's on tf.clip_by_global_norm's gradients.
    clipped, _ = tf.clip_by_global_norm(gradients, clip)
    assert float(tf.linalg.global_norm(output.gradients)) == pytest.approx(clip, rel=1e-5)
    hand.optimizer.apply(clipped, hand.model.parameters(), tf.constant(LEARNING_RATE))
    for mine, expected in zip(state.model.parameters(), hand.model.parameters()):
        np.testing.assert_allclose(mine.numpy(), expected.numpy(), rtol=1e-5, atol=1e-7)


def test_below_the_threshold_the_step_is_bit_identical_to_an_unclipped_one():
    _, _, norm = hand_gradients()
    plain, _, plain_health = one_step()
    loose, _, health = one_step(clip=norm * 2)
    assert "clipped_fraction" not in plain_health and health["clipped_fraction"] == 0.0
    assert plain_health["grad_norm"] == health["grad_norm"]
    for a, b in zip(plain.model.parameters(), loose.model.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_under_float16_loss_scaling_the_unscaled_gradients_are_clipped():
    _, _, norm = hand_gradients()
    state, output, health = one_step(clip=norm / 4, precision="mixed_float16")
    assert float(state.loss_scale.scale) == 2.0**15  # The loss was scaled...
    # ...but the norm and the clip are of the unscaled gradients (float16's
    # rounding aside): clipping the scaled ones would leave a norm 2**15 smaller.
    assert health["grad_norm"] == pytest.approx(norm, rel=1e-2)
    assert float(tf.linalg.global_norm(output.gradients)) == pytest.approx(norm / 4, rel=1e-5)
    assert int(state.optimizer.step) == 1


def scalar_values(workdir, tag):
    accumulator = event_accumulator.EventAccumulator(str(workdir / SUMMARY_SUBDIR / "train"))
    accumulator.Reload()
    if tag not in accumulator.Tags()["tensors"]:
        return []
    return [float(tf.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors(tag)]


CLIPPED = dict(FAST, steps_per_call=4, clip_grad_norm=1.0)


def test_a_clipped_run_resumes_bit_exactly_and_logs_its_gradient_health(
        tmp_path, small_data_dir):
    straight, _ = run(TrainConfig(**CLIPPED, train_steps=41), tmp_path / "straight",
                      small_data_dir)
    run(TrainConfig(**CLIPPED, train_steps=23), tmp_path / "resumed", small_data_dir)
    resumed, _ = run(TrainConfig(**CLIPPED, train_steps=41), tmp_path / "resumed",
                     small_data_dir)
    assert resumed["params_sha256"] == straight["params_sha256"]
    unclipped, _ = run(TrainConfig(**FAST, steps_per_call=4, train_steps=41),
                       tmp_path / "unclipped", small_data_dir)
    assert unclipped["params_sha256"] != straight["params_sha256"]
    # Every progress line writes the interval's mean norm; with clipping, the share
    # of clipped steps (some here, not all: the norm falls as the model learns).
    fractions = scalar_values(tmp_path / "straight", "clipped_fraction")
    assert len(fractions) == len(scalar_values(tmp_path / "straight", "grad_norm")) == 9
    assert all(0.0 <= f <= 1.0 for f in fractions) and 0.0 < sum(fractions) < len(fractions)
    norms = scalar_values(tmp_path / "unclipped", "grad_norm")
    assert len(norms) == 9 and all(n > 0 and np.isfinite(n) for n in norms)
    assert scalar_values(tmp_path / "unclipped", "clipped_fraction") == []
