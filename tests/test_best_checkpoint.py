"""--keep_best and --early_stopping_patience: the best checkpoint, its record, the early stop,
its read-only re-run, an exact resume after SIGKILL, and the readers' --checkpoint=best."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, assert_usage_error, run_module, snapshot, synthetic_digits

import mnist_tf
from mnist_tf import workdir as workdirs
from mnist_tf.config import ConfigError, TrainConfig
from mnist_tf.errors import CheckpointError

tf = pytest.importorskip("tensorflow")

from mnist_tf.data import pipeline  # noqa: E402
from mnist_tf.inference.evaluate import evaluate_checkpoint  # noqa: E402
from mnist_tf.training import trainer  # noqa: E402

# 200 training examples, 10 steps per epoch; an evaluation every 5 steps.
TINY = dict(hidden_sizes=(16,), batch_size=20, train_steps=60, lr_schedule="constant",
            learning_rate=0.03, log_every_steps=5, histogram_every_steps=0, eval_batch_size=60,
            eval_every_steps=5, validation_size=60, jit_compile=False, deterministic=True)


def splits(validation_labels_shuffled=False):
    """200 train, 60 validation, 60 test synthetic digits (validation labels optionally wrong)."""
    images, labels = synthetic_digits(60, seed=3)
    if validation_labels_shuffled:  # Learning the digits makes the validation loss worse.
        labels = np.random.default_rng(0).permutation(labels)
    return pipeline.Splits(
        train=pipeline.from_arrays(*synthetic_digits(200, seed=1)),
        validation=pipeline.from_arrays(images, labels),
        test=pipeline.from_arrays(*synthetic_digits(60, seed=2)),
        num_train=200, num_validation=60, num_test=60)


def train(config, workdir, data=None):
    lines = []
    results = trainer.train_and_evaluate(config, str(workdir), splits=data or splits(),
                                         log=lines.append)
    return results, lines


def first_best(values, lower_is_better):
    """(index, value) of the best value, the earliest on ties."""
    best = min(values) if lower_is_better else max(values)
    return values.index(best), best


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A run whose validation accuracy reaches 100% and stays: it stops 3 evaluations later.

    One rolling checkpoint kept, saved every 5 steps: the rotation passes the best.
    """
    workdir = tmp_path_factory.mktemp("stopped")
    config = TrainConfig(**TINY, keep_best="validation_accuracy", early_stopping_patience=3,
                         keep_checkpoints=1, checkpoint_every_steps=5)
    results, lines = train(config, workdir)
    return workdir, config, results, lines


def test_the_best_by_accuracy_is_kept_and_the_run_stops_after_the_patience(stopped):
    workdir, _, results, lines = stopped
    history = results["history"]
    index, value = first_best(history["validation_accuracy"], lower_is_better=False)
    best = results["best"]
    best_step = history["step"][index]
    # A tie (100% again) keeps the earlier: three evaluations without a new best stop the run.
    assert value == 1.0 and best["step"] == best_step
    assert history["validation_accuracy"][index + 1:] == [1.0, 1.0, 1.0]
    assert history["step"][-1] == best_step + 15 == results["global_step"] < 60
    path = str(workdir / "checkpoints" / "best" / f"ckpt-{best_step}")
    assert best == {"metric": "validation_accuracy", "value": 1.0, "step": best_step,
                    "checkpoint": path}
    assert results["stopped_early"] == {"step": results["global_step"], "patience": 3}
    on_disk = json.loads((workdir / "results.json").read_text())
    assert on_disk["best"] == best and on_disk["stopped_early"] == results["stopped_early"]
    # The rolling checkpoints (one kept) rotated past the best without deleting it.
    assert sorted(os.listdir(workdir / "checkpoints" / "best")) == [
        "checkpoint", f"ckpt-{best_step}.data-00000-of-00001", f"ckpt-{best_step}.index"]
    assert workdirs.checkpoint_paths(str(workdir)) == [
        str(workdir / "checkpoints" / f"ckpt-{results['global_step']}")]
    assert any(line.startswith(f"No new best validation_accuracy in 3 evaluations (best 1.0000 "
                               f"at step {best_step}): stopping early") for line in lines)


def test_a_rerun_of_a_run_stopped_early_is_read_only(stopped):
    workdir, config, results, _ = stopped
    before = snapshot(workdir)
    again, lines = train(config, workdir)
    after = snapshot(workdir)
    assert json.loads(after.pop(workdirs.REEVALUATION_FILE))["global_step"] == (
        results["global_step"])
    assert after == before  # Byte for byte: no training, no new best, no new event file.
    assert again.pop("history") == {}
    assert again == json.loads(before[workdirs.RESULTS_FILE])
    assert any("stopped early: 3 evaluations without a new best validation_accuracy" in line
               for line in lines)
    assert not any(line.startswith(("step ", "Done: ")) for line in lines)


def test_a_run_stopped_early_without_results_is_finished_and_a_larger_patience_trains_on(
        tmp_path, stopped):
    workdir, config, results, _ = stopped
    copy = tmp_path / "copy"
    os.makedirs(copy)
    for path, content in snapshot(workdir).items():
        if path != workdirs.RESULTS_FILE:  # Killed between its last checkpoint and results.json.
            os.makedirs(os.path.dirname(copy / path), exist_ok=True)
            (copy / path).write_bytes(content)
    finished, lines = train(config, copy)
    assert finished["global_step"] == results["global_step"]
    assert finished["stopped_early"] == results["stopped_early"]
    assert finished["best"]["step"] == results["best"]["step"]
    assert any(line.startswith("Already trained to step") for line in lines)
    assert not any(line.startswith("step ") for line in lines)  # Nothing trained.

    longer, _ = train(dataclasses.replace(config, early_stopping_patience=5), copy)
    assert longer["global_step"] == results["global_step"] + 10
    assert longer["best"]["step"] == results["best"]["step"]
    assert longer["best"]["checkpoint"].startswith(str(copy))


def test_a_rerun_of_a_run_stopped_at_its_test_accuracy_target_is_read_only(tmp_path):
    config = TrainConfig(**TINY, stop_at_test_accuracy=0.9)
    results, _ = train(config, tmp_path)
    assert results["target_reached"]["step"] == results["global_step"] < 60
    before = snapshot(tmp_path)
    train(config, tmp_path)
    after = snapshot(tmp_path)
    assert workdirs.REEVALUATION_FILE in after.keys() - before.keys()
    after.pop(workdirs.REEVALUATION_FILE)
    assert after == before


def test_the_test_split_never_chooses_the_best(tmp_path):
    # Validation labels shuffled: its loss is best early while the test loss keeps falling.
    results, _ = train(TrainConfig(**TINY, keep_best="validation_loss"), tmp_path,
                       splits(validation_labels_shuffled=True))
    history = results["history"]
    index, value = first_best(history["validation_loss"], lower_is_better=True)
    test_index, _ = first_best(history["test_loss"], lower_is_better=True)
    assert index != test_index
    assert results["best"]["step"] == history["step"][index]
    assert results["best"]["value"] == value
    assert results["stopped_early"] is None and results["global_step"] == 60


def test_load_and_evaluate_take_the_best(stopped):
    workdir, _, results, _ = stopped
    best = results["best"]
    classifier = mnist_tf.load(workdir, checkpoint="best")
    assert classifier.checkpoint == best["checkpoint"] and classifier.step == best["step"]
    assert mnist_tf.load(workdir, checkpoint="latest").step == results["global_step"]
    evaluated = evaluate_checkpoint(str(workdir), "validation", checkpoint="best",
                                    splits=splits(), log=lambda line: None)
    assert evaluated["checkpoint"] == best["checkpoint"] and evaluated["step"] == best["step"]
    assert evaluated["accuracy"] == best["value"]


def test_a_workdir_without_a_best_checkpoint_gets_a_one_line_error(tmp_path):
    train(TrainConfig(**{**TINY, "train_steps": 5}), tmp_path)
    with pytest.raises(CheckpointError, match=r"checkpoint=best: .* keeps no best checkpoint .*"
                       r"keep_best=validation_loss"):
        mnist_tf.load(tmp_path, checkpoint="best")
    result = run_module("mnist_tf.evaluate", f"--workdir={tmp_path}", "--checkpoint=best")
    assert_usage_error(result, "--checkpoint=best", "--keep_best=validation_loss")


# The SIGKILL run: 500 training examples of the shared data dir, 20 steps per epoch,
# dropout on (the checkpointed RNG resumes too), gradients clipped; a new best at nearly every
# evaluation and no rolling checkpoint before the end, so the kill always falls
# after a best checkpoint that no rolling one follows.
KILLED = ["--hidden_sizes=16", "--batch_size=25", "--validation_size=100", "--train_steps=100",
          "--lr_schedule=constant", "--learning_rate=0.003", "--dropout=0.2",
          "--log_every_steps=5", "--eval_every_steps=5", "--checkpoint_every_steps=1000",
          "--histogram_every_steps=0", "--eval_batch_size=100", "--keep_best=validation_loss",
          "--early_stopping_patience=4", "--clip_grad_norm=0.5", "--deterministic",
          "--nojit_compile", "--nodownload"]
KILLED_CONFIG = TrainConfig(
    hidden_sizes=(16,), batch_size=25, validation_size=100, train_steps=100,
    lr_schedule="constant", learning_rate=0.003, dropout=0.2, log_every_steps=5,
    eval_every_steps=5, checkpoint_every_steps=1000, histogram_every_steps=0,
    eval_batch_size=100, keep_best="validation_loss", early_stopping_patience=4,
    clip_grad_norm=0.5, deterministic=True, jit_compile=False)


def kill_after_step(step, workdir, data_dir):
    """Starts the KILLED run, SIGKILLs it once it has logged `step`."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_tf.train", f"--workdir={workdir}",
         f"--data_dir={data_dir}", *KILLED], cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in process.stdout:
            if line.startswith("step ") and int(line.split()[1].split("/")[0]) >= step:
                break
        else:
            raise AssertionError(f"the run ended before step {step}")
        process.kill()  # SIGKILL: no handler runs.
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_sigkill_after_a_best_checkpoint_resumes_with_the_exact_record(tmp_path,
                                                                        small_data_dir):
    def quiet_run(workdir):
        return trainer.train_and_evaluate(KILLED_CONFIG, str(workdir), data_dir=small_data_dir,
                                          allow_download=False, log=lines.append)

    lines = []
    straight = quiet_run(tmp_path / "straight")
    workdir = tmp_path / "killed"
    kill_after_step(40, workdir, small_data_dir)
    assert workdirs.checkpoint_paths(str(workdir)) == []  # Only best ones were saved.
    kept = workdirs.best_checkpoint_paths(str(workdir))
    assert kept, os.listdir(workdir / "checkpoints")
    # As if the kill had fallen between a new best and the deletion of the old one.
    older = workdir / "checkpoints" / "best" / "ckpt-5"
    for name in os.listdir(workdir / "checkpoints" / "best"):
        if name.startswith(os.path.basename(kept[0]) + "."):
            (workdir / "checkpoints" / "best" / name.replace(
                os.path.basename(kept[0]), "ckpt-5")).write_bytes(
                (workdir / "checkpoints" / "best" / name).read_bytes())
    # The best checkpoints carry the run's configuration: a contradicting resume is refused.
    with pytest.raises(ConfigError, match="learning_rate"):
        trainer.train_and_evaluate(dataclasses.replace(KILLED_CONFIG, learning_rate=0.01),
                                   str(workdir), data_dir=small_data_dir, allow_download=False,
                                   log=lines.append)
    lines.clear()
    resumed = quiet_run(workdir)
    assert any(line == f"Resuming from {kept[0]} at step {workdirs.checkpoint_step(kept[0])}"
               for line in lines), lines[:3]
    assert any(line.startswith(f"Deleted {older}") for line in lines)
    assert resumed["params_sha256"] == straight["params_sha256"]
    assert resumed["stopped_early"] == straight["stopped_early"]
    assert resumed["best"] == {**straight["best"], "checkpoint": straight["best"][
        "checkpoint"].replace(str(tmp_path / "straight"), str(workdir))}
    assert workdirs.best_checkpoint_paths(str(workdir)) == [resumed["best"]["checkpoint"]]
