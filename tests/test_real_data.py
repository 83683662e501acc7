"""End to end on the real MNIST, through the real data path.

Uses the TFDS data dir ($TFDS_DATA_DIR or TFDS's default) when it already
holds a prepared copy (the Quickstart's first command makes one); otherwise,
or with MNIST_TF_TEST_FRESH_DATA=1, it prepares a fresh copy through the
registry mirror exactly as a new machine does (the `real_data` fixture in
conftest.py). Deselect with -m "not real_data".
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_tf.config import TrainConfig
from mnist_tf.training import trainer

REPO = Path(__file__).resolve().parents[1]


def train(workdir, data_dir, *flags):
    return subprocess.run(
        [sys.executable, "-m", "mnist_tf.train", f"--workdir={workdir}", f"--data_dir={data_dir}",
         *flags],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )


@pytest.mark.real_data
def test_trains_on_real_mnist_to_95_percent(tmp_path, real_data):
    data_dir, fresh = real_data
    result = train(tmp_path / "run", data_dir, "--hidden_sizes=256", "--batch_size=128",
                   "--epochs=2", "--validation_size=5000", "--lr_schedule=cosine",
                   "--log_every_steps=200")
    assert result.returncode == 0, result.stderr[-2000:]
    expected_source = "registry mirror" if fresh else "prepared TFDS mnist/3.0.1 found"
    assert expected_source in result.stdout
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["data_source"] == ("mirror" if fresh else "prepared")
    assert results["global_step"] == 2 * (55000 // 128)
    assert results["test_accuracy"] >= 0.95, results
    assert results["validation_accuracy"] >= 0.95, results


# One epoch of a 256-unit model, in this process (no TensorFlow start-up per
# run); the data held as tensors (the same batches as the tf.data path), each
# precision compiled by XLA as by default. (Without XLA, float16 matmuls on a
# CPU run in TensorFlow's emulated kernels, some 30x slower than XLA's.)
PRECISION_RUN = dict(hidden_sizes=(256,), batch_size=128, epochs=1, validation_size=0,
                     learning_rate=2e-3, lr_schedule="cosine", log_every_steps=200,
                     histogram_every_steps=0, data_on_device=True, steps_per_call=50)


def train_in_process(workdir, data_dir, precision):
    lines = []
    results = trainer.train_and_evaluate(
        TrainConfig(**PRECISION_RUN, precision=precision), str(workdir), data_dir=data_dir,
        allow_download=False, log=lines.append)
    assert f"Precision: {precision}" in "\n".join(lines)
    return results["test_accuracy"]


@pytest.fixture(scope="module")
def float32_accuracy(tmp_path_factory, real_data):
    return train_in_process(tmp_path_factory.mktemp("float32"), real_data[0], "float32")


@pytest.mark.real_data
@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_reduced_precision_reaches_float32s_accuracy_on_real_mnist(
        tmp_path, real_data, float32_accuracy, precision):
    accuracy = train_in_process(tmp_path, real_data[0], precision)
    assert float32_accuracy >= 0.95
    assert abs(accuracy - float32_accuracy) <= 0.01, (accuracy, float32_accuracy)
