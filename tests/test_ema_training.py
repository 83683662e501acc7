"""Weight averaging (--ema_decay) and elastic distortions inside real training runs."""

from __future__ import annotations

import numpy as np
import pytest

import mnist_tf
from mnist_tf.config import TrainConfig
from mnist_tf.model.mlp import MLP, params_sha256
from mnist_tf.training import state as train_state
from mnist_tf.training import trainer

# Without XLA: these tests need the arithmetic, and compiling would double
# their time; the averaged weights' update under XLA is in tests/test_ema.py.
SMALL = dict(jit_compile=False, hidden_sizes=(32,), batch_size=32, validation_size=100,
             log_every_steps=5, eval_batch_size=64)
AVERAGED = dict(ema_decay=0.9, augment_rotation_degrees=5.0, augment_elastic_alpha=8.0,
                augment_elastic_sigma=3.0)


def train(config, workdir, data_dir):
    lines = []
    results = trainer.train_and_evaluate(config, str(workdir), data_dir=data_dir,
                                         allow_download=False, log=lines.append)
    return results, lines


def restored(config, workdir):
    state = train_state.TrainState(config)
    train_state.restore(state, str(workdir), log=lambda line: None)
    return state


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory, small_data_dir):
    config = TrainConfig(**SMALL, **AVERAGED, epochs=2)
    workdir = tmp_path_factory.mktemp("averaged")
    results, lines = train(config, workdir, small_data_dir)
    return config, workdir, results, lines


def test_the_run_reports_and_evaluates_the_averaged_weights(averaged_run, small_data_dir):
    config, workdir, results, lines = averaged_run
    assert results["weights"] == "averaged"
    assert "Weights: evaluation and inference use the averaged weights (EMA, decay 0.9)" in lines
    state = restored(config, workdir)
    assert results["params_sha256"] == params_sha256(state.model)
    assert results["ema_params_sha256"] == params_sha256(state.ema.model)
    assert results["ema_params_sha256"] != results["params_sha256"]
    # The Python API (and through it evaluate's code) loads the averages and says so.
    classifier = mnist_tf.load(str(workdir))
    assert classifier.weights == "averaged" and "weights='averaged'" in repr(classifier)
    assert params_sha256(classifier.model) == results["ema_params_sha256"]
    evaluation = classifier.evaluate(data_dir=small_data_dir, allow_download=False,
                                     log=lambda line: None)
    assert evaluation["weights"] == "averaged"
    assert evaluation["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-9)
    assert evaluation["loss"] == pytest.approx(results["test_loss"], rel=1e-5)


def test_a_run_without_averaging_keeps_its_checkpoint_and_reports_trained_weights(
        tmp_path, small_data_dir):
    config = TrainConfig(**SMALL, train_steps=3)
    results, lines = train(config, tmp_path, small_data_dir)
    assert results["weights"] == "trained" and results["ema_params_sha256"] is None
    assert "Weights: evaluation and inference use the trained weights" in lines
    assert restored(config, tmp_path).ema is None
    assert mnist_tf.load(str(tmp_path)).weights == "trained"


def test_the_checkpointed_average_is_the_hand_computed_one(tmp_path, small_data_dir):
    # One step per run, each resuming the last (a constant schedule may be
    # extended), so every step's weights can be read from its checkpoint.
    base = dict(**SMALL, **AVERAGED, lr_schedule="constant", warmup_steps=0)
    weights = [[p.numpy() for p in MLP((32,), seed=0).parameters()]]  # Step 0: the init.
    for step in range(1, 5):
        config = TrainConfig(**base, train_steps=step)
        train(config, tmp_path, small_data_dir)
        weights.append([p.numpy() for p in restored(config, tmp_path).model.parameters()])
    average = [w.copy() for w in weights[0]]
    for t, theta in enumerate(weights[1:], start=1):
        d = min(0.9, (1 + t) / (10 + t))
        average = [a - (a - w) * np.float32(1 - d) for a, w in zip(average, theta)]
    final = restored(TrainConfig(**base, train_steps=4), tmp_path)
    for got, want in zip(final.ema.model.parameters(), average):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
