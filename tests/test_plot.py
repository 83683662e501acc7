"""`python -m mnist_tf.plot`: curves and prediction grids as PNGs; matplotlib optional."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_tf import plot
from mnist_tf.config import TrainConfig
from mnist_tf.errors import UserError
from mnist_tf.training import trainer
from mnist_tf.workdir import SUMMARY_SUBDIR

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, small_data_dir):
    workdir = tmp_path_factory.mktemp("plot_run")
    config = TrainConfig(hidden_sizes=(16,), batch_size=32, epochs=2, validation_size=100,
                         log_every_steps=5, eval_batch_size=64)
    trainer.train_and_evaluate(config, str(workdir), data_dir=small_data_dir,
                               allow_download=False, log=lambda s: None)
    return workdir


def test_reads_scalars_back_from_event_files(workdir):
    train = plot.read_scalars(str(workdir / SUMMARY_SUBDIR / "train"))
    validation = plot.read_scalars(str(workdir / SUMMARY_SUBDIR / "validation"))
    assert [step for step, _ in train["loss"]] == list(range(5, 31, 5))
    assert [step for step, _ in validation["accuracy"]] == [15, 30]
    assert all(0.0 <= value <= 1.0 for _, value in validation["accuracy"])


def test_writes_curves_and_predictions(workdir, small_data_dir):
    lines = []
    written = plot.plot_workdir(str(workdir), data_dir=small_data_dir, allow_download=False,
                                num_digits=12, log=lines.append)
    assert [os.path.basename(p) for p in written] == ["curves.png", "predictions.png"]
    for path in written:
        with open(path, "rb") as f:
            assert f.read(8) == PNG_MAGIC
        from PIL import Image
        image = np.asarray(Image.open(path).convert("L"))
        assert image.shape[0] > 200 and image.shape[1] > 400
        assert image.std() > 10  # Something was drawn, not a blank canvas.
    assert any(line.startswith("Wrote ") and line.endswith("curves.png") for line in lines)
    assert not [p for p in os.listdir(workdir) if p.startswith(".")]


def test_workdir_without_summaries_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no training summaries"):
        plot.plot_curves(str(tmp_path), str(tmp_path / "curves.png"))
    assert not (tmp_path / "curves.png").exists()


def run_plot(*args, block_matplotlib=False):
    code = "import sys\n"
    if block_matplotlib:
        code += "sys.modules['matplotlib'] = None  # as if it were not installed\n"
    code += ("import runpy\nsys.argv = ['mnist_tf.plot'] + sys.argv[1:]\n"
             "runpy.run_module('mnist_tf.plot', run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_without_matplotlib_the_message_says_how_to_install_it(workdir):
    result = run_plot(f"--workdir={workdir}", block_matplotlib=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "matplotlib" in lines[0] and '.[plot]' in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_errors_are_one_line(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "a_file").write_text("")
    several = f"--workdir={tmp_path},{tmp_path / 'other'}"
    for args, fragment in ((["--workdir=" + str(tmp_path / "none")], "does not exist"),
                           ([], "--workdir: required"),
                           (["--workdir=" + str(tmp_path), "--num_digits=0"], "--num_digits"),
                           ([several], "--output_dir: required with several --workdir"),
                           ([several, f"--output_dir={tmp_path / 'a_file'}"],
                            "--output_dir: " + str(tmp_path / "a_file") + " is a file")):
        result = run_plot(*args)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert fragment in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["a_file", "other"]  # Nothing written.
