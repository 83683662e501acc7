"""--nan_policy: a non-finite loss stops the run (last good checkpoint kept) or skips the step."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_usage_error, run_module, synthetic_digits
from test_trainer import scalar_tags

from mnist_tf.config import TrainConfig
from mnist_tf.data import pipeline
from mnist_tf.errors import TrainingDiverged
from mnist_tf.model.mlp import MLP
from mnist_tf.training import trainer
from mnist_tf.training.steps import all_finite, guarded_gradients
from mnist_tf.workdir import SUMMARY_SUBDIR

# Without XLA (the default): these tests need the arithmetic, and compiling would
# double their time; the XLA path has tests of its own.
SMALL = dict(jit_compile=False, hidden_sizes=(32,), batch_size=32, epochs=3, validation_size=0,
             log_every_steps=5, checkpoint_every_steps=5, eval_batch_size=50,
             histogram_every_steps=0, learning_rate=3e-3, deterministic=True)


def splits_with_a_pixel(value, index=100, uint8=False):
    """320 synthetic digits (10 steps per epoch); example `index` has `value` at pixel 300.

    With `uint8`, the pixels stay uint8 (the trainer's own input) and example
    `index` gets the uint8 marker instead (its first four pixels at 255).
    """
    images, labels = synthetic_digits(320, seed=5)
    train = pipeline.from_arrays(images, labels)
    if uint8:
        pixels = train.images.numpy()
        pixels[index, :4] = 255
    else:
        # Float pixels in [0, 1] (the steps take float input as it is): uint8 has no NaN.
        pixels = train.images.numpy().astype(np.float32) / 255.0
        pixels[index, 300] = value
    test = pipeline.from_arrays(*synthetic_digits(100, seed=6))
    return pipeline.Splits(train=pipeline.Examples(tf.constant(pixels), train.labels),
                           validation=None, test=test, num_train=320, num_validation=0,
                           num_test=100)


def splits_with_a_poisoned_example():
    """One training example holds a NaN pixel."""
    return splits_with_a_pixel(np.nan)


def assert_checkpoint_finite(workdir):
    """Every floating-point variable of the workdir's newest checkpoint is finite."""
    weights = tf.train.load_checkpoint(str(workdir / "checkpoints"))
    for name in weights.get_variable_to_shape_map():
        value = weights.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.isfinite(value).all(), name


def run(config, workdir):
    lines = []
    results = trainer.train_and_evaluate(config, str(workdir),
                                         splits=splits_with_a_poisoned_example(),
                                         log=lines.append)
    return results, lines


def checkpoint_files(workdir):
    return {p.name: p.read_bytes() for p in (workdir / "checkpoints").iterdir()}


def test_stop_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged) as error:
        run(TrainConfig(**SMALL), tmp_path)
    message = str(error.value)
    step = int(message.split(" at step ")[1].split()[0])
    assert "not finite at step" in message and "--nan_policy=skip_step" in message
    # The poisoned example sits in one batch of the first epoch.
    assert 1 <= step <= 10
    saved = sorted(int(name.split("-")[1].split(".")[0])
                   for name in checkpoint_files(tmp_path) if name.endswith(".index"))
    assert all(s < step for s in saved)
    assert f"ckpt-{saved[-1]}" in message if saved else "None" in message
    assert not (tmp_path / "results.json").exists()


def test_skip_step_skips_each_poisoned_batch_and_trains_on(tmp_path):
    results, _ = run(TrainConfig(**SMALL, nan_policy="skip_step"), tmp_path)
    assert results["skipped_steps"] == 3  # Once per epoch.
    assert results["global_step"] == 30
    assert results["test_accuracy"] > 0.9
    assert_checkpoint_finite(tmp_path)


def test_a_learning_rate_that_diverges_stops_the_cli_with_one_line(tmp_path, small_data_dir):
    workdir = tmp_path / "run"
    # One Adam step at this rate leaves finite but huge weights (checkpoint 1);
    # the next step's loss overflows. The learning rate is fixed on resume, so
    # the first run already uses it. That first run is only the set-up: it is
    # trained here, in this process, with the settings the command line's flags
    # give (no second TensorFlow start-up). Without XLA: the message is tested,
    # not the compiler.
    settings = dict(hidden_sizes=(32,), batch_size=50, validation_size=100,
                    checkpoint_every_steps=4, log_every_steps=4, learning_rate=1e30,
                    jit_compile=False)
    good = trainer.train_and_evaluate(TrainConfig(**settings, train_steps=1), str(workdir),
                                      data_dir=small_data_dir, allow_download=False,
                                      log=lambda line: None)
    assert good["global_step"] == 1
    before = checkpoint_files(workdir)
    results_before = (workdir / "results.json").read_bytes()
    diverged = run_module("mnist_tf.train", f"--workdir={workdir}", f"--data_dir={small_data_dir}",
                          "--nodownload", "--hidden_sizes=32", "--batch_size=50",
                          "--validation_size=100", "--checkpoint_every_steps=4",
                          "--log_every_steps=4", "--learning_rate=1e30", "--nojit_compile",
                          "--train_steps=40")
    assert_usage_error(diverged, "not finite", "at step 2", "the last good checkpoint",
                       "ckpt-1")
    assert checkpoint_files(workdir) == before
    assert (workdir / "results.json").read_bytes() == results_before
    assert json.loads(results_before)["global_step"] == 1


def final_checkpoint(workdir):
    """Every variable of the workdir's newest checkpoint, by name (save_counter aside)."""
    reader = tf.train.load_checkpoint(str(workdir / "checkpoints"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not name.startswith("save_counter")}


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_a_run_with_skipped_steps_resumes_exactly(tmp_path, precision):
    # Stopped at step 15, after the first epoch's skipped update, and resumed: the
    # checkpoint must carry the skip count (it is part of the data position), the
    # float16 loss scale the skip halved, the dropout RNG and Adam's state.
    config = dict(SMALL, nan_policy="skip_step", precision=precision, dropout=0.2)
    straight, _ = run(TrainConfig(**config), tmp_path / "straight")
    stopped, _ = run(TrainConfig(**config, train_steps=15), tmp_path / "resumed")
    assert stopped["skipped_steps"] >= 1  # At least epoch 1's poisoned batch.
    resumed, lines = run(TrainConfig(**config), tmp_path / "resumed")
    assert any(line.startswith("Resuming from") and "at step 15" in line for line in lines)
    assert resumed["skipped_steps"] == straight["skipped_steps"] == 3
    assert resumed["params_sha256"] == straight["params_sha256"]
    expected, actual = final_checkpoint(tmp_path / "straight"), final_checkpoint(
        tmp_path / "resumed")
    assert expected.keys() == actual.keys()
    if precision == "mixed_float16":
        assert any("loss_scale" in name for name in expected)
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


# A marker pixel value: finite, so the forward pass and the loss stay finite on
# every CPU; only the gradient is poisoned. This does not depend on how a CPU's
# fused MatMul+BiasAdd+Relu treats NaN (AVX-512's oneDNN kernel maps it to 0).
MARKER = 0.123


def splits_with_a_marked_example():
    """One training example holds the (finite) marker pixel."""
    return splits_with_a_pixel(MARKER)


@pytest.fixture
def poisoned_gradients(monkeypatch):
    """Makes every gradient NaN for batches holding the marker, with a finite loss."""
    original = MLP.__call__

    @tf.custom_gradient
    def poison(x, marked):
        def grad(dy):
            return tf.where(marked, tf.constant(np.nan, dy.dtype), dy), None
        return tf.identity(x), grad

    def call(self, x, training=False, seed=None):
        marked = tf.reduce_any(tf.logical_or(  # The float marker, or the uint8 one.
            tf.equal(x[:, 300], MARKER), tf.reduce_all(tf.equal(x[:, :4], 1.0), axis=1)))
        return poison(original(self, x, training=training, seed=seed), marked)

    monkeypatch.setattr(MLP, "__call__", call)


# float inputs: the guard reads every gradient; uint8 inputs (the trainer's own):
# only the bias gradients (steps.guarded_gradients), which must still see it.
@pytest.mark.parametrize("fast, uint8", [(False, False), (True, False), (True, True)],
                         ids=["tf.data", "device_loop", "device_loop-uint8"])
def test_a_nan_gradient_with_a_finite_loss_stops_the_run(tmp_path, poisoned_gradients, fast,
                                                         uint8):
    config = TrainConfig(**{**SMALL, "jit_compile": fast}, data_on_device=fast,
                         steps_per_call=4 if fast else 1)
    lines = []
    with pytest.raises(TrainingDiverged) as error:
        trainer.train_and_evaluate(config, str(tmp_path),
                                   splits=splits_with_a_pixel(MARKER, uint8=uint8),
                                   log=lines.append)
    message = str(error.value)
    step = int(message.split(" at step ")[1].split()[0])
    # The marked example's batch in epoch 0 (10 steps per epoch): exactly that step.
    order = pipeline.epoch_order(320, 0, 0).numpy()  # SMALL runs with seed 0.
    assert step == int(np.flatnonzero(order == 100)[0]) // 32 + 1
    # Every progress line before it had a finite loss: the loss alone would not have told.
    assert all("loss nan" not in line for line in lines)
    # The summary writers are closed on the way out: the train curve so far is on disk.
    assert "loss" in scalar_tags(tmp_path / SUMMARY_SUBDIR / "train")
    saved = sorted(int(name.split("-")[1].split(".")[0])
                   for name in checkpoint_files(tmp_path) if name.endswith(".index"))
    assert all(s < step for s in saved)
    assert_checkpoint_finite(tmp_path)


def test_skip_step_skips_a_nan_gradient_with_a_finite_loss(tmp_path, poisoned_gradients):
    results = trainer.train_and_evaluate(
        TrainConfig(**SMALL, nan_policy="skip_step"), str(tmp_path),
        splits=splits_with_a_marked_example(), log=lambda line: None)
    assert results["skipped_steps"] == 3  # Once per epoch.
    assert results["test_accuracy"] > 0.9


def test_the_guard_checks_gradients_not_only_the_loss():
    finite = [tf.ones([3, 2]), tf.zeros([2])]
    assert bool(all_finite(tf.constant(1.0), finite))
    assert not bool(all_finite(tf.constant(np.nan), finite))
    assert not bool(all_finite(tf.constant(1.0), [tf.ones([3, 2]), tf.constant([0.0, np.inf])]))
    # Which gradients it reads: the biases where they suffice, else all of them.
    assert guarded_gradients(finite, [False, True]) == finite[1:]
    assert guarded_gradients(finite, None) == finite
