"""End to end on the real MNIST, through the real data path.

Uses the TFDS data dir ($TFDS_DATA_DIR or TFDS's default) when it already
holds a prepared copy (the Quickstart's first command makes one); otherwise,
or with MNIST_TF_TEST_FRESH_DATA=1, it prepares a fresh copy through the
registry mirror exactly as a new machine does. Deselect with -m "not real_data".
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_tf import sources

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.real_data
def test_trains_on_real_mnist_to_95_percent(tmp_path):
    data_dir = sources.default_data_dir()
    fresh = os.environ.get("MNIST_TF_TEST_FRESH_DATA") == "1" or not sources.is_prepared(data_dir)
    if fresh:
        data_dir = str(tmp_path / "tfds")
    result = subprocess.run(
        [sys.executable, "-m", "mnist_tf.train", f"--workdir={tmp_path / 'run'}",
         f"--data_dir={data_dir}", "--hidden_sizes=256", "--batch_size=128", "--epochs=2",
         "--validation_size=5000", "--lr_schedule=cosine", "--log_every_steps=200"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected_source = "registry mirror" if fresh else "prepared TFDS mnist/3.0.1 found"
    assert expected_source in result.stdout
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["data_source"] == ("mirror" if fresh else "prepared")
    assert results["global_step"] == 2 * (55000 // 128)
    assert results["test_accuracy"] >= 0.95, results
    assert results["validation_accuracy"] >= 0.95, results
