"""`python -m mnist_tf.plot`: curves and prediction grids as PNGs; matplotlib optional."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_tf import figures, plot
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


def write_scalars(summary_dir, split, points):
    import tensorflow as tf

    with tf.summary.create_file_writer(str(summary_dir / split)).as_default():
        for step, loss, accuracy in points:
            tf.summary.scalar("loss", loss, step=step)
            tf.summary.scalar("accuracy", accuracy, step=step)


def test_curves_are_linear_zoomed_and_draw_test_without_validation(tmp_path):
    summaries = tmp_path / SUMMARY_SUBDIR
    write_scalars(summaries, "train", [(10, 0.9, 0.80), (20, 0.5, 0.90), (30, 0.3, 0.95)])
    write_scalars(summaries, "test", [(20, 0.4, 0.93), (40, 0.35, 0.94)])
    (tmp_path / "results.json").write_text('{"steps_per_epoch": 20}')
    figure = figures.curves_figure(str(tmp_path))
    loss_ax, accuracy_ax = figure.axes
    assert loss_ax.get_yscale() == accuracy_ax.get_yscale() == "linear"
    assert [line.get_label() for line in accuracy_ax.get_lines()] == ["train", "test"]
    low, high = accuracy_ax.get_ylim()
    assert 0.86 <= low <= 0.9 and 1.0 <= high < 1.02  # From the first test point on.
    assert loss_ax.get_ylim()[0] == 0 and 0.5 <= loss_ax.get_ylim()[1] < 0.9
    figure.canvas.draw()
    ticks = [t.get_text() for t in accuracy_ax.get_xticklabels() if t.get_text()]
    assert ticks and not any(t.endswith("0") and "." in t for t in ticks), ticks


LIBRARY_CALLS = """
import sys, types
import numpy as np
import matplotlib
from mnist_tf import figures
probabilities = np.full(10, 0.01); probabilities[3] = 0.91
prediction = types.SimpleNamespace(digit=3, label=5, probabilities=probabilities, file=None,
                                   test_index=0, image=np.zeros((28, 28), np.uint8))
grid = types.SimpleNamespace(images=np.zeros((4, 784), np.uint8), labels=np.array([1, 2, 3, 4]),
                             predicted=np.array([1, 2, 3, 5]), accuracy=0.75)
pictures = [figures.curves_figure(sys.argv[1]), figures.prediction_figure(prediction),
            figures.predictions_figure(grid)]
assert all(p._repr_png_().startswith(b"\\x89PNG") for p in pictures)
import matplotlib.pyplot as plt
print(matplotlib.get_backend(), len(plt.get_fignums()))
"""


def test_library_figures_leave_the_callers_backend_alone(workdir):
    # A notebook's inline backend must survive the library's figures, which
    # render themselves to PNG without pyplot.
    result = subprocess.run([sys.executable, "-c", LIBRARY_CALLS, str(workdir)], cwd=REPO,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "MPLBACKEND": "svg"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["svg", "0"]  # No pyplot figure left open.


def test_wrote_lines_print_absolute_paths(workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = []
    figures.plot_runs([str(workdir)], "out", log=lines.append)
    assert lines == [f"Wrote {tmp_path / 'out' / 'curves.png'}"]
