"""--device and --enable_tensor_float_32 (the test machines have no GPU)."""

import pytest
import tensorflow as tf
from conftest import assert_usage_error, run_module

from mnist_tf import devices
from mnist_tf.config import ConfigError, TrainConfig
from mnist_tf.errors import UserError

NO_GPU = not tf.config.list_physical_devices("GPU")


def test_cpu_and_auto_resolve_to_the_cpu_without_a_gpu():
    assert devices.resolve("cpu") == "/CPU:0"
    if NO_GPU:
        assert devices.resolve("auto") == "/CPU:0"
    assert devices.describe("/CPU:0") == "/CPU:0 (CPU)"


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
@pytest.mark.parametrize("text", ["gpu", "gpu:0", "gpu:3"])
def test_asking_for_a_missing_gpu_is_an_error(text):
    with pytest.raises(UserError, match=rf"--device: {text} asked for, but TensorFlow sees no GPU"):
        devices.resolve(text)


@pytest.mark.parametrize("text", ["tpu", "gpu:", "cpu:1", "GPU", "gpu:-1", ""])
def test_misspelled_devices_are_config_errors(text):
    with pytest.raises(ConfigError, match="--device: .* is not one of auto, cpu, gpu, gpu:N"):
        TrainConfig(device=text)


def config_from_command_line(*argv):
    """The TrainConfig that `python -m mnist_tf.train *argv` would run with."""
    from absl import flags

    from mnist_tf import train

    if "enable_tensor_float_32" not in flags.FLAGS:
        train.define_train_flags()
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["mnist_tf.train", *argv])
    try:
        return train.config_from_flags()
    finally:
        flags.FLAGS.unparse_flags()


@pytest.fixture
def restore_tf32():
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    yield
    tf.config.experimental.enable_tensor_float_32_execution(before)


# No flag means off: TensorFlow's own default is on, so a run must turn it off.
@pytest.mark.parametrize("flag, enabled", [
    ("--enable_tensor_float_32", True), ("--noenable_tensor_float_32", False), (None, False)])
def test_the_tf32_flag_sets_tensorflow_for_the_run_and_its_log(
        tmp_path, restore_tf32, flag, enabled):
    from conftest import synthetic_digits

    from mnist_tf.data import pipeline
    from mnist_tf.training import trainer

    config = config_from_command_line(
        *([flag] if flag else []), "--hidden_sizes=8", "--batch_size=20", "--train_steps=2",
        "--validation_size=0", "--log_every_steps=1", "--histogram_every_steps=0",
        "--eval_batch_size=50", "--nojit_compile")
    assert config.enable_tensor_float_32 is enabled
    splits = pipeline.Splits(
        train=pipeline.from_arrays(*synthetic_digits(40, seed=1)), validation=None,
        test=pipeline.from_arrays(*synthetic_digits(50, seed=2)),
        num_train=40, num_validation=0, num_test=50)
    # Start from the opposite setting; note TensorFlow's setting as the run logs its device.
    tf.config.experimental.enable_tensor_float_32_execution(not enabled)
    logged = []
    trainer.train_and_evaluate(config, str(tmp_path / "run"), splits=splits,
                               log=lambda line: logged.append(
                                   (line, tf.config.experimental
                                    .tensor_float_32_execution_enabled())))
    (device_line, tf32_then), = [(line, on) for line, on in logged
                                 if line.startswith("Device: ")]
    assert tf32_then is enabled
    assert tf.config.experimental.tensor_float_32_execution_enabled() is enabled
    device = devices.resolve(config.device)
    # The log claims TF32 only where it exists: on a GPU, and only when asked for.
    assert device_line == f"Device: {devices.describe(device)}" + (
        "; TF32 matmuls on" if enabled and device.startswith("/GPU") else "")
    if NO_GPU:
        assert "TF32" not in device_line


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_cli_refuses_a_missing_gpu_before_any_work(tmp_path, small_data_dir):
    workdir = tmp_path / "run"
    result = run_module("mnist_tf.train", f"--workdir={workdir}", f"--data_dir={small_data_dir}",
                        "--device=gpu:1", "--nodownload")
    assert_usage_error(result, "--device: gpu:1", "no GPU", "--device=cpu")
    assert not (workdir / "checkpoints").exists()
