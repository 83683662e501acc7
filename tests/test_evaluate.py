"""`mnist_tf.evaluate`: metrics, confusion matrix, files written and one-line errors."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_usage_error, run_module
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from mnist_tf import evaluate
from mnist_tf.config import TrainConfig
from mnist_tf.errors import CheckpointError, UserError
from mnist_tf.training import trainer
from mnist_tf.workdir import SUMMARY_SUBDIR

REPO = Path(__file__).resolve().parents[1]
# Checkpoints at steps 10, 20 and 30; 100 validation examples carved from 600.
# Without XLA (the default): these tests need the arithmetic, and compiling would
# double their time; the XLA path has tests of its own.
SMALL = dict(jit_compile=False,
             hidden_sizes=(32,), batch_size=32, train_steps=30, validation_size=100,
             learning_rate=3e-3, log_every_steps=10, checkpoint_every_steps=10,
             eval_batch_size=64)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_data_dir):
    """A workdir trained once for this file, and its results.json values."""
    workdir = tmp_path_factory.mktemp("run")
    results = trainer.train_and_evaluate(TrainConfig(**SMALL), str(workdir),
                                         data_dir=small_data_dir, allow_download=False,
                                         log=lambda line: None)
    return workdir, results


def copy_run(trained, tmp_path) -> Path:
    """A private copy of the trained workdir, for tests that change or damage it."""
    return Path(shutil.copytree(trained[0], tmp_path / "run"))


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def run_evaluate(workdir, data_dir, **kwargs):
    return evaluate.evaluate_checkpoint(str(workdir), data_dir=data_dir, allow_download=False,
                                        log=lambda line: None, **kwargs)


def evaluate_cli(*args, timeout=120):
    return run_module("mnist_tf.evaluate", *args, timeout=timeout)



def test_test_split_reproduces_the_training_runs_metrics(trained, small_data_dir):
    workdir, train_results = trained
    results = run_evaluate(workdir, small_data_dir)

    assert results["split"] == "test"
    assert results["step"] == 30
    assert results["checkpoint"] == str(workdir / "checkpoints" / "ckpt-30")
    # Same checkpoint, same 200 test images as the run's final evaluation.
    assert results["num_examples"] == 200
    # One evaluation path (the trainer's traced eval step): equal, not close.
    assert results["accuracy"] == train_results["test_accuracy"]
    assert results["loss"] == train_results["test_loss"]
    assert results["accuracy"] > 0.8  # The synthetic digits are easy.

    matrix = np.array(results["confusion_matrix"])
    assert matrix.shape == (10, 10)
    assert matrix.sum(axis=1).tolist() == results["support"]
    assert sum(results["support"]) == 200
    assert np.trace(matrix) / 200 == pytest.approx(results["accuracy"])
    for k in range(10):
        assert results["recall"][k] == pytest.approx(matrix[k, k] / matrix[k].sum())
        predicted = matrix[:, k].sum()
        assert results["precision"][k] == pytest.approx(matrix[k, k] / predicted if predicted
                                                        else 0.0)

    assert json.loads((workdir / "eval.json").read_text()) == results
    png = Image.open(workdir / "confusion_matrix_test.png")
    assert png.format == "PNG" and png.mode == "RGB" and png.size[0] > 300

    # TensorBoard: the same picture, at the checkpoint's step.
    accumulator = event_accumulator.EventAccumulator(str(workdir / SUMMARY_SUBDIR / "eval"),
                                                     size_guidance={"tensors": 0})
    accumulator.Reload()
    events = accumulator.Tensors("confusion_matrix_test")
    assert [e.step for e in events] == [30]
    encoded = events[0].tensor_proto.string_val[2]  # [width, height, png]
    summary_image = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
    assert np.array_equal(summary_image, np.asarray(png))


def test_results_json_eval_json_and_library_agree_exactly(trained, small_data_dir, tmp_path):
    """results.json (trainer), eval.json (command line's call) and the library's result."""
    from mnist_tf import inference
    from mnist_tf.data import pipeline
    from mnist_tf.inference import evaluate as library

    workdir = copy_run(trained, tmp_path)
    saved = json.loads((workdir / "results.json").read_text())
    run_evaluate(workdir, small_data_dir)
    eval_json = json.loads((workdir / "eval.json").read_text())
    loaded = inference.load_model(str(workdir))
    splits = pipeline.load_splits(small_data_dir, loaded.config.validation_size)
    result = library.evaluate_model(loaded.model, splits.test, loaded.config.eval_batch_size,
                                    loaded.config.jit_compile)

    assert saved["test_loss"] == eval_json["loss"] == result.loss
    assert saved["test_accuracy"] == eval_json["accuracy"] == result.accuracy
    assert eval_json["confusion_matrix"] == result.confusion.tolist()
    assert eval_json["precision"] == result.precision.tolist()
    assert eval_json["recall"] == result.recall.tolist()
    # And so the printed figures match to the last digit.
    report = library.format_report(eval_json)
    assert f"Loss {saved['test_loss']:.4f}, accuracy {saved['test_accuracy']:.2%}" in report


def test_entry_point_is_thin_and_only_it_picks_a_backend():
    entry = (REPO / "mnist_tf" / "evaluate.py").read_text()
    library = (REPO / "mnist_tf" / "inference" / "evaluate.py").read_text()
    assert len(entry.splitlines()) <= 120
    assert "matplotlib.use" not in library
    assert 'matplotlib.use("Agg")' in entry


def test_validation_split_is_carved_like_training_and_keeps_test_results(
        trained, small_data_dir):
    workdir, train_results = trained
    run_evaluate(workdir, small_data_dir, split="test")
    test_json = (workdir / "eval.json").read_bytes()

    results = run_evaluate(workdir, small_data_dir, split="validation")
    assert results["num_examples"] == 100
    assert results["accuracy"] == train_results["validation_accuracy"]
    assert results["loss"] == train_results["validation_loss"]
    assert json.loads((workdir / "eval_validation.json").read_text()) == results
    assert (workdir / "confusion_matrix_validation.png").is_file()
    assert (workdir / "eval.json").read_bytes() == test_json


def test_named_checkpoint(trained, small_data_dir):
    workdir, _ = trained
    older = str(workdir / "checkpoints" / "ckpt-10")
    results = run_evaluate(workdir, small_data_dir, checkpoint=older)
    assert results["checkpoint"] == older and results["step"] == 10


def test_report_is_readable(trained, small_data_dir):
    workdir, _ = trained
    results = run_evaluate(workdir, small_data_dir)
    report = evaluate.format_report(results)
    lines = report.splitlines()
    assert lines[0] == (f"Checkpoint: {workdir / 'checkpoints' / 'ckpt-30'} (step 30, "
                        "hidden sizes [32], trained weights)")
    assert lines[1] == "Split: test, 200 examples"
    assert lines[2].startswith(f"Loss {results['loss']:.4f}, accuracy")
    header = lines.index("class  precision   recall  support")
    for k in range(10):
        cells = lines[header + 1 + k].split()
        assert cells[0] == str(k) and int(cells[3]) == results["support"][k]
        assert cells[2] == f"{results['recall'][k]:.2%}"
    assert lines[header + 11].split()[0] == "mean"
    matrix_header = next(i for i, line in enumerate(lines) if line.startswith("true\\pred"))
    rows = lines[matrix_header + 1:matrix_header + 11]
    assert [[int(v) for v in row.split()[1:]] for row in rows] == results["confusion_matrix"]


def test_validation_split_of_a_run_without_one_names_the_flag(tmp_path, small_data_dir):
    trainer.train_and_evaluate(TrainConfig(**{**SMALL, "validation_size": 0, "train_steps": 1}),
                               str(tmp_path), data_dir=small_data_dir, allow_download=False,
                               log=lambda line: None)
    with pytest.raises(UserError, match=r"--split=validation: .* validation_size=0"):
        evaluate.evaluate_checkpoint(str(tmp_path), "validation")


def save_other_architecture(directory: Path, hidden_sizes) -> str:
    """Saves a model-only checkpoint of another MLP, as ckpt-99 under `directory`."""
    import tensorflow as tf

    from mnist_tf.model.mlp import MLP

    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=MLP(hidden_sizes, seed=0)), str(directory), max_to_keep=10)
    return manager.save(checkpoint_number=99)


def break_remove_checkpoints(workdir, tmp_path):
    shutil.rmtree(workdir / "checkpoints")
    (workdir / "checkpoints").mkdir()
    return None, [str(workdir / "checkpoints"), "holds no checkpoint"]


def break_missing_named(workdir, tmp_path):
    missing = str(tmp_path / "elsewhere" / "ckpt-7")
    return missing, ["--checkpoint", missing, "does not exist"]


def break_copy_other_architecture_in(workdir, tmp_path):
    # Becomes the workdir's latest checkpoint, as a careless copy would.
    path = save_other_architecture(workdir / "checkpoints", (16,))
    return None, [path, "[32]", "does not fit"]


def break_point_at_deeper_model(workdir, tmp_path):
    path = save_other_architecture(tmp_path / "other", (32, 16))
    return path, [path, "[32]", "does not fit"]


def break_truncate_every_data_file(workdir, tmp_path):
    # One damaged checkpoint falls back to an older one (test below); all
    # damaged is an error naming the newest.
    for data_file in (workdir / "checkpoints").glob("ckpt-*.data-*"):
        data_file.write_bytes(data_file.read_bytes()[:100])
    return None, [str(workdir / "checkpoints" / "ckpt-30"), "cannot be restored"]


@pytest.mark.parametrize("damage", [break_remove_checkpoints, break_missing_named,
                                    break_copy_other_architecture_in,
                                    break_point_at_deeper_model, break_truncate_every_data_file],
                         ids=lambda f: f.__name__.removeprefix("break_"))
def test_checkpoint_problems_are_one_clear_error_and_write_nothing(
        damage, trained, tmp_path, small_data_dir):
    workdir = copy_run(trained, tmp_path)
    checkpoint, fragments = damage(workdir, tmp_path)
    before = snapshot(workdir)
    with pytest.raises(CheckpointError) as error:
        run_evaluate(workdir, small_data_dir, checkpoint=checkpoint)
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert snapshot(workdir) == before


def test_unknown_split_in_process(trained):
    with pytest.raises(UserError, match="--split: unknown split 'train'"):
        evaluate.evaluate_checkpoint(str(trained[0]), "train")


def test_command_line_prints_report_and_writes_files(trained, small_data_dir, tmp_path):
    workdir = copy_run(trained, tmp_path)
    for name in ("eval.json", "confusion_matrix_test.png"):
        (workdir / name).unlink(missing_ok=True)
    result = evaluate_cli(f"--workdir={workdir}", f"--data_dir={small_data_dir}", "--nodownload")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert f"Checkpoint: {workdir / 'checkpoints' / 'ckpt-30'} (step 30" in out
    assert "class  precision   recall  support" in out
    assert "true\\pred    0    1    2" in out
    assert f"Wrote {workdir / 'eval.json'}" in out
    saved = json.loads((workdir / "eval.json").read_text())
    assert f"Loss {saved['loss']:.4f}, accuracy {saved['accuracy']:.2%}" in out
    assert (workdir / "confusion_matrix_test.png").is_file()


def test_command_line_damaged_newest_checkpoint_falls_back_and_changes_no_checkpoint(
        trained, small_data_dir, tmp_path):
    # The same restore as training's: the newest intact checkpoint, with a warning.
    workdir = copy_run(trained, tmp_path)
    data_file = next((workdir / "checkpoints").glob("ckpt-30.data-*"))
    data_file.write_bytes(data_file.read_bytes()[:100])
    before = {p.name: p.read_bytes() for p in (workdir / "checkpoints").iterdir()}
    result = evaluate_cli(f"--workdir={workdir}", f"--data_dir={small_data_dir}", "--nodownload")
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "ckpt-30" in warning[0] and "damaged" in warning[0]
    assert f"Checkpoint: {workdir / 'checkpoints' / 'ckpt-20'} (step 20" in result.stdout
    assert {p.name: p.read_bytes() for p in (workdir / "checkpoints").iterdir()} == before


def test_command_line_every_checkpoint_damaged_exits_2_and_changes_nothing(
        trained, small_data_dir, tmp_path):
    workdir = copy_run(trained, tmp_path)
    for data_file in (workdir / "checkpoints").glob("ckpt-*.data-*"):
        data_file.write_bytes(data_file.read_bytes()[:100])
    before = snapshot(workdir)
    result = evaluate_cli(f"--workdir={workdir}", f"--data_dir={small_data_dir}", "--nodownload")
    assert_usage_error(result, str(workdir / "checkpoints" / "ckpt-30"), "cannot be restored")
    assert snapshot(workdir) == before


@pytest.mark.parametrize("args, fragments", [
    (["--workdir={workdir}", "--split=train"], ["--split=train", "test|validation"]),
    (["--split=test"], ["--workdir", "must have a value"]),
    (["--workdir={workdir}", "extra"], ["unexpected arguments", "extra"]),
])
def test_command_line_bad_flags_exit_2(args, fragments, trained):
    before = snapshot(trained[0])
    result = evaluate_cli(*(arg.format(workdir=trained[0]) for arg in args))
    assert_usage_error(result, *fragments)
    assert snapshot(trained[0]) == before
