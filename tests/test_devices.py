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


def test_tensor_float_32_toggles():
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    try:
        devices.set_tensor_float_32(False)
        assert not tf.config.experimental.tensor_float_32_execution_enabled()
        devices.set_tensor_float_32(True)
        assert tf.config.experimental.tensor_float_32_execution_enabled()
    finally:
        devices.set_tensor_float_32(before)


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
def test_cli_refuses_a_missing_gpu_before_any_work(tmp_path, small_data_dir):
    workdir = tmp_path / "run"
    result = run_module("mnist_tf.train", f"--workdir={workdir}", f"--data_dir={small_data_dir}",
                        "--device=gpu:1", "--nodownload")
    assert_usage_error(result, "--device: gpu:1", "no GPU", "--device=cpu")
    assert not (workdir / "checkpoints").exists()
