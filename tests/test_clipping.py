"""--clip_grad_norm and gradient health: the global norm, clipping, and their summaries.

Clipping under tf.distribute (on the all-reduced gradients) is checked by
test_distribute.py, whose runs all clip: a mirrored run matches the one-device
run only if every replica clips the global batch's gradients alike.
"""

import numpy as np
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


STEPS = 3


def train_steps(clip=0.0, precision="float32"):
    """A fresh state after STEPS traced steps on one batch: (state, last output, metrics)."""
    state = TrainState(TrainConfig(hidden_sizes=(32,), precision=precision, seed=5))
    metrics = Metrics(clipping=bool(clip))
    body = make_train_step(state, make_schedule("constant", LEARNING_RATE, 0, 100), metrics,
                           BATCH, clip_grad_norm=clip)
    step = tf.function(lambda images, labels: body(images, labels, tf.constant(0)))
    for _ in range(STEPS):
        output = step(*batch())
    return state, output, metrics.result()


def hand_steps(clip=0.0):
    """STEPS steps computed here with tf.clip_by_global_norm; (state, first step's norm)."""
    state = TrainState(TrainConfig(hidden_sizes=(32,), seed=5))
    images, labels = batch()
    inputs = tf.cast(tf.reshape(images, [BATCH, -1]), tf.float32) / 255.0
    norms = []
    for _ in range(STEPS):
        with tf.GradientTape() as tape:
            loss, _ = losses.total_loss(state.model(inputs), labels, state.model.kernels(), 0.0,
                                        BATCH)
        gradients = tape.gradient(loss, state.model.parameters())
        norms.append(float(tf.linalg.global_norm(gradients)))
        if clip:
            gradients, _ = tf.clip_by_global_norm(gradients, clip)
        state.optimizer.apply(gradients, state.model.parameters(), tf.constant(LEARNING_RATE))
    return state, norms[0]


def first_norm():
    return hand_steps()[1]


def test_clipped_steps_apply_the_hand_clipped_updates():
    clip = first_norm() / 4  # Below every step's norm here: each step is clipped.
    state, output, health = train_steps(clip)
    assert health["clipped_steps"] == STEPS
    hand, _ = hand_steps(clip)
    for mine, expected in zip(state.model.parameters(), hand.model.parameters()):
        np.testing.assert_allclose(mine.numpy(), expected.numpy(), rtol=1e-5, atol=1e-7)
    # Unclipped, the steps end elsewhere (Adam's steps are not scale-invariant
    # once the clipping factor changes from step to step).
    plain, _ = hand_steps()
    assert not np.allclose(plain.model.parameters()[0].numpy(),
                           state.model.parameters()[0].numpy(), rtol=1e-5, atol=1e-7)


def test_below_the_threshold_the_steps_are_bit_identical_to_unclipped_ones():
    plain, plain_output, plain_health = train_steps()
    loose, output, health = train_steps(clip=first_norm() * 2)
    assert "clipped_steps" not in plain_health and health["clipped_steps"] == 0
    for a, b in zip(plain.model.parameters(), loose.model.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # The output holds the gradients before clipping, for the histograms and grad_norm.
    for a, b in zip(plain_output.gradients, output.gradients):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_under_float16_loss_scaling_the_unscaled_gradients_are_clipped():
    norm = first_norm()
    # A threshold above the unscaled norm clips nothing; the scaled gradients'
    # norm (2**15 larger) would have been clipped at every step.
    state, output, health = train_steps(clip=norm * 2, precision="mixed_float16")
    assert float(state.loss_scale.scale) == 2.0**15
    assert health["clipped_steps"] == 0 and int(state.optimizer.step) == STEPS
    _, _, health = train_steps(clip=norm / 4, precision="mixed_float16")
    assert health["clipped_steps"] == STEPS


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
