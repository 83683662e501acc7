"""Running a complete run again leaves its record as it is; a longer run trains on."""

import json
import os

import pytest
from conftest import snapshot, synthetic_digits

from mnist_tf import workdir as workdirs
from mnist_tf.config import TrainConfig

tf = pytest.importorskip("tensorflow")

from mnist_tf.data import pipeline  # noqa: E402
from mnist_tf.training import trainer  # noqa: E402


def small_splits():
    return pipeline.Splits(
        train=pipeline.from_arrays(*synthetic_digits(100, seed=1)),
        validation=pipeline.from_arrays(*synthetic_digits(40, seed=3)),
        test=pipeline.from_arrays(*synthetic_digits(50, seed=2)),
        num_train=100, num_validation=40, num_test=50)


def small_config(**overrides):
    fields = dict(hidden_sizes=(8,), batch_size=20, train_steps=4, lr_schedule="constant",
                  log_every_steps=2, histogram_every_steps=0, eval_batch_size=50,
                  jit_compile=False, steps_per_call=2)
    return TrainConfig(**{**fields, **overrides})


def train(config, workdir, splits):
    lines = []
    results = trainer.train_and_evaluate(config, workdir, splits=splits, log=lines.append)
    return results, lines


def test_a_rerun_of_a_complete_run_changes_no_file_and_writes_its_evaluation_apart(tmp_path):
    workdir, splits = str(tmp_path / "run"), small_splits()
    first, _ = train(small_config(), workdir, splits)
    before = snapshot(workdir)
    assert {workdirs.RESULTS_FILE, workdirs.CONFIG_FILE} <= set(before)
    assert sum("tfevents" in path for path in before) >= 4  # train, validation, test, hparams.

    # The same command again, with a setting that may change on resume: config.json
    # would record it if it were rewritten.
    again, lines = train(small_config(log_every_steps=1), workdir, splits)

    after = snapshot(workdir)
    fresh = json.loads(after.pop(workdirs.REEVALUATION_FILE))
    assert after == before  # Byte for byte, and no new file (no new event file either).
    # The record, returned as is; no training, so no history.
    assert again.pop("history") == {}
    assert again == json.loads(before[workdirs.RESULTS_FILE])
    assert fresh["global_step"] == 4 and fresh["checkpoint"].endswith("ckpt-4")
    assert fresh["params_sha256"] == first["params_sha256"]
    assert fresh["test_accuracy"] == first["test_accuracy"]
    assert fresh["validation_loss"] == pytest.approx(first["validation_loss"], rel=1e-6)
    # The console: the recorded results first, then the fresh evaluation.
    restored, = [line for line in lines if line.startswith("Restored ")]
    assert restored.endswith("ckpt-4: the run is complete (step 4 of 4)")
    recorded = next(i for i, line in enumerate(lines) if line.startswith("Recorded results ("))
    reevaluated = next(i for i, line in enumerate(lines) if line.startswith("Re-evaluated: "))
    assert recorded < reevaluated
    assert f"step 4, test accuracy {first['test_accuracy']:.2%}" in lines[recorded]
    assert lines[reevaluated].endswith(
        f"(as recorded). Written: {os.path.join(workdir, workdirs.REEVALUATION_FILE)}")
    assert any(line.startswith("Already trained to step 4 of 4 (a larger --epochs")
               for line in lines)
    assert not any(line.startswith(("step ", "Done: ")) for line in lines)


def test_a_longer_run_trains_on_and_a_run_without_results_is_finished(tmp_path):
    workdir, splits = str(tmp_path / "run"), small_splits()
    train(small_config(), workdir, splits)
    events = {path for path in snapshot(workdir) if "tfevents" in path}

    # More steps under a constant schedule: not complete, so it trains as before.
    longer, lines = train(small_config(train_steps=6), workdir, splits)
    assert longer["global_step"] == 6
    assert any(line.startswith("Resuming from ") and line.endswith("at step 4") for line in lines)
    files = snapshot(workdir)
    assert json.loads(files[workdirs.RESULTS_FILE])["global_step"] == 6
    assert workdirs.REEVALUATION_FILE not in files
    # The runs' event files are kept and added to; the HParams session file (in
    # the workdir itself) is replaced by one recording the latest configuration.
    runs = {path for path in events if os.sep in path}
    assert {path for path in files if "tfevents" in path and os.sep in path} > runs
    assert len([path for path in files if "tfevents" in path and os.sep not in path]) == 1

    # A run that stopped between its last checkpoint and results.json is finished,
    # results.json included, not taken for complete.
    os.remove(os.path.join(workdir, workdirs.RESULTS_FILE))
    finished, lines = train(small_config(train_steps=6), workdir, splits)
    assert finished["global_step"] == 6 and os.path.exists(
        os.path.join(workdir, workdirs.RESULTS_FILE))
    assert any(line.startswith("Already trained to step 6 of 6") for line in lines)
    assert workdirs.REEVALUATION_FILE not in os.listdir(workdir)
