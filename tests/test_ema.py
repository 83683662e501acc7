"""model/ema.py: the weight average against a hand-computed one."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mnist_tf.model.ema import WeightAverage, ema_decay_at
from mnist_tf.model.mlp import MLP


def test_decay_warms_up_then_holds():
    assert float(ema_decay_at(0.999, tf.constant(1, tf.int64))) == pytest.approx(2 / 11)
    assert float(ema_decay_at(0.999, tf.constant(100, tf.int64))) == pytest.approx(101 / 110)
    assert float(ema_decay_at(0.9, tf.constant(10_000, tf.int64))) == pytest.approx(0.9)


def _hand_average(initial, weights, decay):
    average = [w.copy() for w in initial]
    for t, theta in enumerate(weights, start=1):
        d = min(decay, (1 + t) / (10 + t))
        average = [a - (a - w) * (1 - d) for a, w in zip(average, theta)]
    return average


@pytest.mark.parametrize("traced", [False, True])
def test_the_average_equals_a_hand_computed_one(traced):
    model = MLP((5,), seed=3)
    ema = WeightAverage(model, decay=0.6)
    initial = [p.numpy() for p in model.parameters()]
    rng = np.random.default_rng(0)
    history = []

    def update(step):
        ema.update(model.parameters(), step)

    update_fn = tf.function(update, jit_compile=True) if traced else update
    for t in range(1, 8):
        for p in model.parameters():  # Stand-in for an optimizer's update.
            p.assign(rng.normal(size=p.shape).astype(np.float32))
        history.append([p.numpy() for p in model.parameters()])
        update_fn(tf.constant(t, tf.int64))

    expected = _hand_average(initial, history, 0.6)
    for got, want in zip(ema.model.parameters(), expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    # The averaged model is a real model: same architecture, own variables.
    assert ema.model.hidden_sizes == model.hidden_sizes
    assert not any(a is p for a, p in zip(ema.model.parameters(), model.parameters()))


def test_the_average_starts_at_the_weights_and_rejects_a_bad_decay():
    model = MLP((4,), seed=1)
    ema = WeightAverage(model, decay=0.99)
    for a, p in zip(ema.model.parameters(), model.parameters()):
        np.testing.assert_array_equal(a.numpy(), p.numpy())
    for bad in (0.0, 1.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="decay"):
            WeightAverage(model, decay=bad)
