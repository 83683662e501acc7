import math

import pytest
import tensorflow as tf

from mnist_tf.model.schedules import Constant, WarmupCosine, make_schedule


def lr(schedule, step):
    return float(schedule(tf.constant(step, tf.int64)))


def test_constant():
    schedule = Constant(0.01)
    assert lr(schedule, 0) == pytest.approx(0.01)
    assert lr(schedule, 10_000) == pytest.approx(0.01)


def test_constant_with_warmup():
    schedule = Constant(0.01, warmup_steps=4)
    assert [lr(schedule, t) for t in range(6)] == pytest.approx(
        [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])


def test_warmup_cosine_values():
    schedule = WarmupCosine(1.0, warmup_steps=10, total_steps=110)
    assert lr(schedule, 0) == pytest.approx(0.1)
    assert lr(schedule, 9) == pytest.approx(1.0)
    assert lr(schedule, 10) == pytest.approx(1.0)
    assert lr(schedule, 60) == pytest.approx(0.5, abs=1e-6)
    assert lr(schedule, 35) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)), abs=1e-6)
    assert lr(schedule, 110) == pytest.approx(0.0, abs=1e-7)
    assert lr(schedule, 500) == pytest.approx(0.0, abs=1e-7)


def test_cosine_without_warmup_starts_at_peak():
    schedule = WarmupCosine(0.5, warmup_steps=0, total_steps=100)
    assert lr(schedule, 0) == pytest.approx(0.5)
    assert lr(schedule, 100) == pytest.approx(0.0, abs=1e-7)


def test_make_schedule():
    assert isinstance(make_schedule("constant", 0.1, 0, 10), Constant)
    assert isinstance(make_schedule("cosine", 0.1, 0, 10), WarmupCosine)
    with pytest.raises(ValueError, match="unknown"):
        make_schedule("step", 0.1, 0, 10)
