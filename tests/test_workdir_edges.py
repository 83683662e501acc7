"""The workdir's edges: whose files it holds, the configuration checkpoints carry, a damaged
state file, readers racing a live run, and the messages of each."""

import json
import os
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from conftest import REPO, assert_usage_error, run_module
from conftest import snapshot as contents

from mnist_tf import api, inference
from mnist_tf import workdir as workdirs
from mnist_tf.config import ConfigError, TrainConfig
from mnist_tf.errors import CheckpointError, TrainingDiverged, UserError
from mnist_tf.training import checkpoints, trainer
from mnist_tf.training import state as train_state

SMALL = dict(jit_compile=False, hidden_sizes=(8,), batch_size=50, validation_size=0,
             log_every_steps=2, checkpoint_every_steps=2, eval_batch_size=100,
             histogram_every_steps=0, learning_rate=3e-3)


def train(workdir, data_dir, **overrides):
    lines = []
    results = trainer.train_and_evaluate(TrainConfig(**{**SMALL, **overrides}), str(workdir),
                                         data_dir=data_dir, allow_download=False,
                                         log=lines.append)
    return results, lines


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_data_dir):
    """A run of 4 steps with checkpoints at steps 2 and 4."""
    workdir = tmp_path_factory.mktemp("trained")
    train(workdir, small_data_dir, train_steps=4)
    return workdir


def copy_of(trained, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(trained, workdir)
    return workdir


# Ownership: training writes only where nothing of the user's would be replaced.

def test_training_refuses_a_directory_of_the_users_files_and_touches_nothing(tmp_path):
    (tmp_path / "config.json").write_text('{"project": "mine"}')
    (tmp_path / "results.json").write_text('{"my": "results"}')
    before = contents(tmp_path)
    result = run_module("mnist_tf.train", f"--workdir={tmp_path}", "--hidden_sizes=32",
                        "--train_steps=20")
    assert_usage_error(result, "--workdir:", str(tmp_path), "config.json, results.json",
                       "did not write", "use a new or empty --workdir")
    assert contents(tmp_path) == before


def test_the_library_refuses_it_too(tmp_path, small_data_dir):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds files mnist_tf did not write"):
        train(tmp_path, small_data_dir, train_steps=2)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_a_directory_with_only_a_lock_file_and_a_half_written_config_is_claimed(
        tmp_path, small_data_dir):
    # Left by a run killed before (or while) writing its config.json; a second
    # worker of a cluster sees the chief's half-written one too.
    (tmp_path / "train.lock").write_text("")
    (tmp_path / ".config.json.k3x9q1").write_text('{"form')
    train(tmp_path, small_data_dir, train_steps=2)
    train(tmp_path, small_data_dir, train_steps=2)
    assert json.loads((tmp_path / "config.json").read_text())["format"] == workdirs.FORMAT


def test_a_config_json_written_before_the_mark_still_resumes(trained, tmp_path, small_data_dir):
    workdir = copy_of(trained, tmp_path)
    values = json.loads((workdir / "config.json").read_text())
    del values["format"]
    (workdir / "config.json").write_text(json.dumps(values))
    results, lines = train(workdir, small_data_dir, train_steps=6)
    assert results["global_step"] == 6 and any("Resuming from" in line for line in lines)


# The configuration travels inside the checkpoint.

def test_deleting_config_json_does_not_switch_the_resume_check_off(trained, tmp_path,
                                                                   small_data_dir):
    workdir = copy_of(trained, tmp_path)
    os.remove(workdir / "config.json")
    before = contents(workdir)
    with pytest.raises(ConfigError, match=r"--learning_rate: 0.01 contradicts 0.003 recorded in "
                                          r".*ckpt-4 \(the configuration it was saved with\)"):
        train(workdir, small_data_dir, train_steps=8, learning_rate=0.01)
    assert contents(workdir) == before  # Refused before anything was written.
    # The same settings resume, and config.json is the run's again.
    results, lines = train(workdir, small_data_dir, train_steps=6)
    assert results["global_step"] == 6
    assert workdirs.read_config(str(workdir)) == TrainConfig(**{**SMALL, "train_steps": 6})


def test_the_cli_refuses_the_bypass_in_one_line(trained, tmp_path, small_data_dir):
    workdir = copy_of(trained, tmp_path)
    os.remove(workdir / "config.json")
    result = run_module("mnist_tf.train", f"--workdir={workdir}", "--hidden_sizes=8",
                        "--batch_size=64", "--train_steps=8", "--nojit_compile",
                        f"--data_dir={small_data_dir}", "--nodownload")
    assert_usage_error(result, "--batch_size: 64 contradicts 50 recorded in", "ckpt-4")
    assert not (workdir / "config.json").exists()


def test_checkpoints_without_any_recorded_configuration_are_refused(tmp_path, small_data_dir):
    # Checkpoints that carry no configuration (saved before they did) and no config.json.
    state = train_state.TrainState(TrainConfig(**SMALL))
    state.optimizer.step.assign(2)
    objects = train_state.checkpoint_objects(state)
    del objects[checkpoints.CONFIG_KEY]
    checkpoints.make_manager(str(tmp_path), 3, **objects).save(checkpoint_number=2)
    with pytest.raises(UserError, match=r"holds checkpoints but no record of the settings that "
                                        r"trained them .*put the run's config.json back"):
        train(tmp_path, small_data_dir, train_steps=4)
    assert not (tmp_path / "config.json").exists()
    # With its config.json beside them, such checkpoints resume as before.
    workdirs.write_config(str(tmp_path), TrainConfig(**SMALL))
    results, lines = train(tmp_path, small_data_dir, train_steps=4)
    assert results["global_step"] == 4 and any("ckpt-2 at step 2" in line for line in lines)


# A damaged state file: found from the files, never a restart from 0.

@pytest.mark.parametrize("text", ["garbage\n", ""])
def test_a_damaged_state_file_resumes_from_the_checkpoint_files(trained, tmp_path,
                                                                 small_data_dir, text):
    workdir = copy_of(trained, tmp_path)
    (workdir / "checkpoints" / "checkpoint").write_text(text)
    for read in (api.load, lambda w: inference.load_model(w, log=lambda line: None)):
        assert read(str(workdir)).step == 4  # Readers leave the state file as it is.
    assert (workdir / "checkpoints" / "checkpoint").read_text() == text
    results, lines = train(workdir, small_data_dir, train_steps=6)
    assert any("checkpoints/checkpoint is empty or damaged; rebuilt it" in line
               for line in lines), lines
    assert any(line.endswith("ckpt-4 at step 4") for line in lines), lines
    assert results["global_step"] == 6
    state = (workdir / "checkpoints" / "checkpoint").read_text()
    assert state.startswith('model_checkpoint_path: "ckpt-6"')
    # The checkpoints found again rotate out as usual (3 kept), not kept forever.
    train(workdir, small_data_dir, train_steps=10)
    assert sorted(path.name for path in (workdir / "checkpoints").glob("ckpt-*.index")) == [
        "ckpt-10.index", "ckpt-6.index", "ckpt-8.index"]


def test_every_tool_reads_an_empty_state_file(trained, tmp_path, small_data_dir):
    workdir = copy_of(trained, tmp_path)
    (workdir / "checkpoints" / "checkpoint").write_text("")
    evaluated = run_module("mnist_tf.evaluate", f"--workdir={workdir}",
                           f"--data_dir={small_data_dir}", "--nodownload")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "Traceback" not in evaluated.stderr


# Readers racing the trainer.

def test_a_checkpoint_rotated_away_while_read_gives_way_to_the_newest(trained, tmp_path,
                                                                      monkeypatch):
    workdir = copy_of(trained, tmp_path)
    aside = tmp_path / "aside"
    aside.mkdir()
    directory = workdir / "checkpoints"
    for path in directory.glob("ckpt-4.*"):
        path.rename(aside / path.name)  # The newest is ckpt-2, until the run saves ckpt-4.
    original, calls = checkpoints._restore_one, []

    def rotate_then_restore(objects, path):
        if not calls:  # The run saves ckpt-4 and deletes ckpt-2 (--keep_checkpoints=1).
            for saved in aside.iterdir():
                saved.rename(directory / saved.name)
            for old in directory.glob("ckpt-2.*"):
                old.unlink()
        calls.append(os.path.basename(path))
        return original(objects, path)

    monkeypatch.setattr(checkpoints, "_restore_one", rotate_then_restore)
    warnings = []
    loaded = inference.load_model(str(workdir), log=warnings.append)
    assert calls == ["ckpt-2", "ckpt-4"]
    assert loaded.step == 4 and loaded.checkpoint.endswith("ckpt-4")
    assert warnings == []  # A rotated checkpoint is not a damaged one.


def test_readers_never_fail_against_a_live_run_that_keeps_one_checkpoint(tmp_path,
                                                                         small_data_dir):
    workdir = tmp_path / "live"
    train(workdir, small_data_dir, train_steps=2)  # Something to read from the start.
    live = subprocess.Popen(
        [sys.executable, "-m", "mnist_tf.train", f"--workdir={workdir}", "--hidden_sizes=8",
         "--batch_size=50", "--validation_size=0", "--train_steps=2000", "--nojit_compile",
         "--steps_per_call=1", "--checkpoint_every_steps=1", "--keep_checkpoints=1",
         "--log_every_steps=2", "--eval_batch_size=100", "--histogram_every_steps=0",
         "--learning_rate=0.003", "--eval_every_epochs=1000", f"--data_dir={small_data_dir}",
         "--nodownload"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, steps, failures = time.time() + 60, set(), []
        while time.time() < deadline and len(steps) < 40 and live.poll() is None:
            try:
                steps.add(api.load(str(workdir)).step)
            except UserError as e:
                failures.append(str(e))
    finally:
        live.terminate()
        live.wait(timeout=60)
    assert failures == []
    assert len(steps) >= 10, steps  # It did read while the run rotated its checkpoints.


def test_no_message_advises_moving_checkpoints_while_a_run_holds_the_workdir(trained, tmp_path):
    workdir = copy_of(trained, tmp_path)
    for data in (workdir / "checkpoints").glob("ckpt-*.data-*"):
        data.write_bytes(data.read_bytes()[:10])
    with pytest.raises(CheckpointError, match="move the checkpoints directory away"):
        inference.load_model(str(workdir), log=lambda line: None)
    with workdirs.lock(str(workdir)):  # As a live run holds it (its pid is alive).
        with pytest.raises(CheckpointError) as info:
            inference.load_model(str(workdir), log=lambda line: None)
    assert f"a training run (pid {os.getpid()}) is writing this workdir" in str(info.value)
    assert "move" not in str(info.value)


# Messages.

def test_a_file_or_a_symlink_loop_is_named_for_what_it_is(trained, tmp_path):
    with pytest.raises(UserError, match=r"config.json is a file, not a directory; pass the "
                                        r"directory a training run wrote"):
        api.load(trained / "config.json")
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    with pytest.raises(UserError, match="loop is a symbolic-link loop"):
        api.load(loop)
    result = run_module("mnist_tf.evaluate", f"--workdir={trained / 'results.json'}")
    assert_usage_error(result, "results.json is a file, not a directory")
    result = run_module("mnist_tf.train", f"--flagfile={loop}")
    assert_usage_error(result, f"--flagfile: {loop} is a symbolic-link loop")


def test_an_image_path_that_is_a_symlink_loop_is_named_so(tmp_path):
    from mnist_tf.data import preprocess

    loop = tmp_path / "digit.png"
    os.symlink(loop, loop)
    with pytest.raises(preprocess.ImageError, match="digit.png: is a symbolic-link loop"):
        preprocess.load_image(loop)


def test_divergence_names_weight_decay_and_a_run_that_saved_nothing():
    with pytest.raises(TrainingDiverged) as info:
        trainer._check_diverged(SimpleNamespace(diverged_at=0), 0,
                                TrainConfig(learning_rate=1e-3, weight_decay=50.0), None)
    message = str(info.value)
    assert "a lower --learning_rate (now 0.001) or --weight_decay (now 50)" in message
    assert message.endswith("nothing was saved after it, and no checkpoint was saved before it")
    assert "None" not in message


def test_a_hand_edited_results_json_is_named_not_a_traceback(trained, tmp_path,
                                                             small_data_dir):
    workdir = copy_of(trained, tmp_path)
    results = json.loads((workdir / "results.json").read_text())
    (workdir / "results.json").write_text(json.dumps({**results, "test_accuracy": "high"}))
    before = contents(workdir)
    with pytest.raises(UserError, match=r"results.json: test_accuracy must be a number, got "
                                        r"'high'; restore the value the run wrote"):
        train(workdir, small_data_dir, train_steps=4)  # The re-run of the complete run.
    assert contents(workdir) == before
