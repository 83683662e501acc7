"""The training loop, on a small prepared dataset of synthetic digits."""

import dataclasses
import json
import os
import types

import pytest
from tensorboard.backend.event_processing import event_accumulator

from mnist_tf.config import ConfigError, TrainConfig
from mnist_tf.errors import CheckpointError
from mnist_tf.training import actions, checkpoints, runners, trainer
from mnist_tf.workdir import SUMMARY_SUBDIR

# Without XLA (the default): these tests need the arithmetic, and compiling would
# double their time; the XLA path has tests of its own.
SMALL = dict(jit_compile=False, hidden_sizes=(32,), batch_size=32, epochs=2, validation_size=100,
             log_every_steps=5, checkpoint_every_steps=10, eval_batch_size=64)


def run(config, workdir, data_dir, **kwargs):
    lines = []
    results = trainer.train_and_evaluate(config, str(workdir), data_dir=data_dir,
                                         allow_download=False, log=lines.append, **kwargs)
    return results, lines


def scalar_tags(path):
    accumulator = event_accumulator.EventAccumulator(str(path))
    accumulator.Reload()
    return set(accumulator.Tags()["tensors"]) | set(accumulator.Tags()["scalars"])


def test_trains_evaluates_and_writes_everything(tmp_path, small_data_dir):
    config = TrainConfig(**{**SMALL, "epochs": 4}, learning_rate=3e-3)
    results, lines = run(config, tmp_path, small_data_dir)

    assert results["test_accuracy"] > 0.9  # The synthetic digits are easy.
    assert results["global_step"] == 4 * (500 // 32)
    assert results["epochs_completed"] == 4
    on_disk = json.loads((tmp_path / "results.json").read_text())
    for key in ("test_accuracy", "test_loss", "validation_accuracy", "global_step",
                "epochs_completed", "wall_seconds", "train_examples_per_second",
                "params_sha256", "flags"):
        assert key in on_disk, key
    assert on_disk["train_examples_per_second"] > 0
    assert on_disk["flags"]["hidden_sizes"] == [32]
    assert len(on_disk["params_sha256"]) == 64
    assert json.loads((tmp_path / "config.json").read_text()) == {
        "format": "mnist_tf.TrainConfig/1", **config.to_dict()}

    # A history as Keras' model.fit returns: one entry per epoch's evaluation.
    history = results["history"]
    assert "history" not in on_disk  # This process's evaluations only: returned, not recorded.
    assert history["epoch"] == [1.0, 2.0, 3.0, 4.0]
    assert history["step"] == [15, 30, 45, 60]
    assert set(history) == {"epoch", "step", "train_loss", "train_accuracy", "validation_loss",
                            "validation_accuracy", "test_loss", "test_accuracy"}
    assert all(len(values) == 4 for values in history.values())
    assert history["test_accuracy"][-1] == results["test_accuracy"]
    assert history["validation_loss"][-1] == results["validation_loss"]
    assert history["train_loss"][0] > history["train_loss"][-1]

    assert any(line.startswith("step 5/") and "examples/s" in line and "ETA" in line
               for line in lines)
    assert lines[-1].startswith("Done:")
    assert lines[-1].endswith(os.path.join(str(tmp_path), "results.json"))

    names = os.listdir(tmp_path / "checkpoints")
    assert f"ckpt-{results['global_step']}.index" in names
    assert scalar_tags(tmp_path / SUMMARY_SUBDIR / "train") >= {
        "loss", "accuracy", "learning_rate", "examples_per_second"}
    assert scalar_tags(tmp_path / SUMMARY_SUBDIR / "validation") >= {"loss", "accuracy"}
    assert scalar_tags(tmp_path / SUMMARY_SUBDIR / "test") >= {"loss", "accuracy"}


def keep_runner(monkeypatch, made):
    """Records the run's runner and eval step, to count their traces."""
    def keep(name, make):
        def wrapper(*args, **kwargs):
            made[name] = make(*args, **kwargs)
            return made[name]
        return wrapper

    monkeypatch.setattr(trainer, "make_runner", keep("runner", trainer.make_runner))
    monkeypatch.setattr(trainer, "make_eval_step", keep("eval", trainer.make_eval_step))


def test_finished_run_only_evaluates_again(tmp_path, small_data_dir):
    config = TrainConfig(**SMALL, train_steps=12)
    first, _ = run(config, tmp_path, small_data_dir)
    again, lines = run(config, tmp_path, small_data_dir)
    assert any("Already trained to step 12" in line for line in lines)
    assert first["history"]["step"] == [12] and again["history"] == {}
    assert again["params_sha256"] == first["params_sha256"]
    assert again["test_accuracy"] == first["test_accuracy"]


def test_resume_with_another_architecture_names_both_values(tmp_path, small_data_dir):
    run(TrainConfig(**SMALL, train_steps=5), tmp_path, small_data_dir)
    before = sorted(os.listdir(tmp_path / "checkpoints"))
    with pytest.raises(ConfigError, match=r"--hidden_sizes: 64 contradicts 32"):
        run(TrainConfig(**{**SMALL, "hidden_sizes": (64,)}, train_steps=10), tmp_path,
            small_data_dir)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == before


def test_damaged_checkpoint_is_a_clear_error(tmp_path, small_data_dir):
    run(TrainConfig(**SMALL, train_steps=5), tmp_path, small_data_dir)
    data_file = next((tmp_path / "checkpoints").glob("ckpt-5.data-*"))
    data_file.write_bytes(data_file.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="ckpt-5"):
        run(TrainConfig(**SMALL, train_steps=10), tmp_path, small_data_dir)


def test_restore_refuses_a_checkpoint_missing_optimizer_state(tmp_path):
    import tensorflow as tf

    from mnist_tf.model.mlp import MLP
    from mnist_tf.model.optimizers import Adam

    model = MLP((8,), seed=0)
    # A checkpoint with the model only, as a careless save would write.
    checkpoints.make_manager(str(tmp_path), 1, model=model).save(checkpoint_number=1)
    optimizer = Adam(model.parameters())
    objects = dict(model=model, optimizer=optimizer, rng=tf.random.Generator.from_seed(0))
    with pytest.raises(CheckpointError, match="cannot be restored"):
        checkpoints.restore(objects, str(tmp_path))


def test_batch_larger_than_training_set(tmp_path, small_data_dir):
    with pytest.raises(ConfigError, match="--batch_size"):
        run(TrainConfig(**{**SMALL, "batch_size": 1000}), tmp_path, small_data_dir)


FAST = dict(SMALL, data_on_device=True, deterministic=True, dropout=0.3, seed=2)


def test_data_on_device_trains_and_traces_its_loop_once(tmp_path, small_data_dir, monkeypatch):
    made = {}
    keep_runner(monkeypatch, made)
    results, lines = run(TrainConfig(**{**FAST, "epochs": 4}, steps_per_call=6,
                                     learning_rate=3e-3), tmp_path, small_data_dir)
    assert isinstance(made["runner"], runners.DeviceLoopRunner)
    assert made["runner"].train_fn.experimental_get_tracing_count() == 1
    assert results["test_accuracy"] > 0.9
    assert results["global_step"] == 4 * (500 // 32)
    # Calls stop at every log interval (5), so every progress line is printed.
    assert [line.split("|")[0].strip() for line in lines if line.startswith("step ")] == [
        f"step {s}/60" for s in (5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60)]


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_steps_per_call_and_the_path_do_not_change_the_result(tmp_path, small_data_dir,
                                                              monkeypatch, jit_compile):
    # Several steps per call is the same arithmetic as one step per call, and
    # tf.data chunks feed the same batches, in the same order, as the split
    # held on the device.
    # The same runs also check what once took runs of their own: every path,
    # with XLA too, trains and traces its steps once per run (2 epochs;
    # validation (100) and test (200) each end in a padded batch).
    made = {}
    keep_runner(monkeypatch, made)

    def traced_run(name, data_on_device, steps_per_call):
        results, _ = run(TrainConfig(**{**FAST, "data_on_device": data_on_device,
                                        "jit_compile": jit_compile},
                                     steps_per_call=steps_per_call),
                         tmp_path / name, small_data_dir)
        runner = made["runner"]
        assert isinstance(runner, runners.DeviceLoopRunner if data_on_device
                          else runners.IteratorRunner), name
        traced = [runner.train_fn, made["eval"]]
        assert [f.experimental_get_tracing_count() for f in traced] == [1] * len(traced), name
        assert results["test_accuracy"] > 0.8, name
        return results["params_sha256"]

    one = traced_run("one", True, 1)
    assert traced_run("many", True, 7) == one
    for steps_per_call in (1, 7):
        assert traced_run(f"piped{steps_per_call}", False, steps_per_call) == one


@pytest.fixture(scope="module")
def straight(tmp_path_factory, small_data_dir):
    """results(config): an uninterrupted run's results, each config trained once per file."""
    done = {}

    def results(config):
        if config not in done:
            done[config] = run(config, tmp_path_factory.mktemp("straight"), small_data_dir)[0]
        return done[config]

    return results


@pytest.mark.parametrize("data_on_device", [False, True], ids=["tf.data", "device_loop"])
def test_both_paths_resume_exactly_mid_call(tmp_path, small_data_dir, straight, data_on_device):
    # 23 steps is mid-epoch (15 steps per epoch): resuming must restore the
    # weights, Adam's slots and step, the dropout RNG and the data position.
    # 23 is not a multiple of the 4 steps per call either: the resumed run's chunks
    # (tf.data) start at batch 8 of epoch 1 and must still hold the same batches.
    config = dict(FAST, data_on_device=data_on_device, steps_per_call=4)
    run(TrainConfig(**config, train_steps=23), tmp_path, small_data_dir)
    resumed, lines = run(TrainConfig(**config, train_steps=41), tmp_path, small_data_dir)
    assert any(line.startswith("Resuming from") and "at step 23" in line for line in lines)
    assert resumed["global_step"] == 41
    assert resumed["params_sha256"] == straight(TrainConfig(**config,
                                                            train_steps=41))["params_sha256"]


def test_deterministic_runs_are_bit_identical(tmp_path, small_data_dir, straight):
    # The tf.data path with dropout; the first run is the tf.data resume test's
    # uninterrupted one (trained once for the file).
    config = TrainConfig(**{**FAST, "data_on_device": False}, steps_per_call=4, train_steps=41)
    first = straight(config)
    second, _ = run(config, tmp_path / "b", small_data_dir)
    other, _ = run(dataclasses.replace(config, seed=6), tmp_path / "c", small_data_dir)
    assert first["params_sha256"] == second["params_sha256"]
    assert first["params_sha256"] != other["params_sha256"]


AUGMENT = dict(augment_rotation_degrees=10.0, augment_scale=0.1, augment_shift_pixels=2.0)


def test_augmentation_changes_training_and_resumes_exactly(tmp_path, small_data_dir, straight):
    # The warp seeds come from the checkpointed generator, so an interrupted
    # augmented run (mid-epoch, several steps per call) ends bit-identical.
    config = dict(FAST, steps_per_call=4, **AUGMENT)
    augmented = straight(TrainConfig(**config, train_steps=41))["params_sha256"]
    run(TrainConfig(**config, train_steps=23), tmp_path / "resumed", small_data_dir)
    resumed, _ = run(TrainConfig(**config, train_steps=41), tmp_path / "resumed",
                     small_data_dir)
    assert resumed["params_sha256"] == augmented
    # Unaugmented, the same run (the device-loop resume test's) ends elsewhere.
    plain = straight(TrainConfig(**FAST, steps_per_call=4, train_steps=41))["params_sha256"]
    assert plain != augmented
    # (Merged from a test of its own.) The loop draws the same warp seeds whether
    # it runs 1 or 4 steps per call; the streamed (tf.data) form has another data
    # order, so it is only checked to learn through the warps.
    one, _ = run(TrainConfig(**{**config, "steps_per_call": 1}, train_steps=41),
                 tmp_path / "one", small_data_dir)
    assert one["params_sha256"] == augmented
    streamed, _ = run(TrainConfig(**{**SMALL, "epochs": 4}, learning_rate=3e-3, **AUGMENT),
                      tmp_path / "streamed", small_data_dir)
    assert streamed["test_accuracy"] > 0.8


def test_eval_every_steps_and_stop_at_test_accuracy(tmp_path, small_data_dir):
    def evaluated_steps(lines):
        return [int(line.split("(step ")[1].split(")")[0]) for line in lines
                if " evaluated (step " in line or " done (step " in line]

    # At a learning rate of 1e-6 the model stays near chance: it trains to the end,
    # evaluating every 7 steps and at each epoch's end (15 steps per epoch). (This
    # run also checks the cadence, which had a run of its own.)
    unreachable, lines = run(TrainConfig(**SMALL, learning_rate=1e-6,
                                         stop_at_test_accuracy=0.9, eval_every_steps=7),
                             tmp_path / "never", small_data_dir)
    assert evaluated_steps(lines) == [7, 14, 15, 21, 28, 30]
    # Every evaluation writes its scalars; the pictures are drawn at epoch ends only.
    accumulator = event_accumulator.EventAccumulator(
        str(tmp_path / "never" / SUMMARY_SUBDIR / "test"),
        size_guidance={event_accumulator.TENSORS: 0, event_accumulator.IMAGES: 0})
    accumulator.Reload()
    assert [event.step for event in accumulator.Tensors("accuracy")] == [7, 14, 15, 21, 28, 30]
    for tag in ("confusion_matrix", "misclassified"):
        assert [event.step for event in accumulator.Tensors(tag)] == [15, 30]
    assert unreachable["test_accuracy"] < 0.9
    assert unreachable["target_reached"] is None
    assert unreachable["global_step"] == 30

    config = TrainConfig(**{**SMALL, "epochs": 4}, learning_rate=3e-3, eval_every_steps=7,
                         stop_at_test_accuracy=0.9)
    results, lines = run(config, tmp_path / "reached", small_data_dir)
    steps = evaluated_steps(lines)
    reached = results["target_reached"]
    assert reached["step"] == steps[-1] == results["global_step"] < 60
    assert results["test_accuracy"] >= 0.9
    assert 0 < reached["seconds"] <= results["wall_seconds"]
    assert any("reached --stop_at_test_accuracy=0.9" in line for line in lines)
    # The checkpoint is saved where the run stopped.
    saved = os.listdir(tmp_path / "reached" / "checkpoints")
    assert f"ckpt-{results['global_step']}.index" in saved


def test_plan_calls_matches_the_loops_calls():
    config = TrainConfig(steps_per_call=50, log_every_steps=100, checkpoint_every_steps=1000,
                         histogram_every_steps=0, profile_steps=(130, 140), eval_every_steps=0)
    plan = trainer.plan_calls(50, 0, 429, periodic_actions(config))
    assert plan == [50, 50, 30, 10, 50, 10, 50, 50, 50, 50, 29]


def periodic_actions(config, total_steps=4290, steps_per_epoch=429):
    """The trainer's actions over a stand-in run (no model needed to ask when they are due)."""
    return trainer.make_actions(
        config, actions.Span(total_steps, steps_per_epoch), metrics=None,
        writers=types.SimpleNamespace(logdir=lambda run: "/nowhere"), log=print,
        state_scalars=None, parameters=None, checkpointer=None, evaluator=None)


def test_next_stop_respects_every_boundary():
    config = TrainConfig(steps_per_call=50, data_on_device=True, log_every_steps=100,
                         checkpoint_every_steps=1000, histogram_every_steps=0,
                         profile_steps=(130, 140))
    periodic = periodic_actions(config)
    assert trainer.next_stop(0, 429, 50, periodic) == 50
    assert trainer.next_stop(80, 429, 50, periodic) == 100
    assert trainer.next_stop(100, 429, 50, periodic) == 130
    assert trainer.next_stop(130, 429, 50, periodic) == 140
    assert trainer.next_stop(400, 429, 50, periodic) == 429
    evaluating = periodic_actions(TrainConfig(steps_per_call=50, data_on_device=True,
                                              eval_every_steps=30))
    assert trainer.next_stop(0, 429, 50, evaluating) == 30
    assert trainer.next_stop(30, 429, 50, evaluating) == 60


def test_each_action_is_due_exactly_at_its_steps():
    config = TrainConfig(log_every_steps=100, checkpoint_every_steps=1000,
                         histogram_every_steps=0, eval_every_steps=300, profile_steps=(130, 140))
    periodic = periodic_actions(config, total_steps=1050)
    due = {name: [s for s in range(1, 1051) if a.due(s)]
           for name, a in periodic._asdict().items()}
    assert due["progress"] == [*range(100, 1001, 100), 1050]
    assert due["histograms"] == []  # 0: never, not even at the end.
    assert due["checkpoint"] == [1000]  # The last step's is saved after the loop.
    assert due["evaluate"] == sorted({*range(300, 1001, 300), *range(429, 1050, 429), 1050})
    assert due["profile"] == [130, 140]
    assert due["stop_at_accuracy"] == []  # No target.
    assert due["preempt"] == list(range(1, 1050))  # After every call; it checks the vote.
    evaluate = periodic_actions(TrainConfig(eval_every_epochs=3), total_steps=3000).evaluate
    assert [s for s in range(1, 3001) if evaluate.due(s)] == [1287, 2574, 3000]


def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(
        tmp_path, small_data_dir):
    config = dict(SMALL, deterministic=True, checkpoint_every_steps=5)
    straight, _ = run(TrainConfig(**config, train_steps=20), tmp_path / "straight",
                      small_data_dir)
    workdir = tmp_path / "run"
    checkpoints = workdir / "checkpoints"
    run(TrainConfig(**config, train_steps=15), workdir, small_data_dir)  # ckpt-5, 10, 15.
    # Each kind of damage starts from these 15-step checkpoints, restored byte for
    # byte (training them again would give the same files, at the cost of a run).
    fifteen = {f.name: f.read_bytes() for f in checkpoints.iterdir()}
    for kind, damage in (("truncated", lambda f: f.write_bytes(f.read_bytes()[:100])),
                         ("missing shard", lambda f: f.unlink())):
        for f in checkpoints.iterdir():
            f.unlink()
        for name, content in fifteen.items():
            (checkpoints / name).write_bytes(content)
        damage(next(checkpoints.glob("ckpt-15.data-*")))
        results, lines = run(TrainConfig(**config, train_steps=20), workdir, small_data_dir)
        warning = next(line for line in lines if line.startswith("warning: checkpoint"))
        assert "ckpt-15" in warning and "ckpt-10" in warning, (kind, warning)
        assert any("Resuming from" in line and "at step 10" in line for line in lines)
        assert results["params_sha256"] == straight["params_sha256"], kind
        assert (checkpoints / "ckpt-15.index").exists()  # Saved afresh at 15.


def test_a_second_run_on_a_locked_workdir_is_refused(tmp_path, small_data_dir):
    from mnist_tf import workdir as workdirs
    from mnist_tf.errors import UserError

    with workdirs.lock(str(tmp_path)):
        with pytest.raises(UserError, match=r"is in use by another training run \(pid \d+\)"):
            run(TrainConfig(**SMALL, train_steps=2), tmp_path, small_data_dir)
    assert not (tmp_path / "checkpoints").exists()
    run(TrainConfig(**SMALL, train_steps=2), tmp_path, small_data_dir)  # Free again.


def test_a_killed_runs_lock_does_not_stay(tmp_path):
    import signal
    import subprocess
    import sys

    from mnist_tf import workdir as workdirs

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mnist_tf import workdir as workdirs\n"
         f"with workdirs.lock({str(tmp_path)!r}):\n"
         "    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    with workdirs.lock(str(tmp_path)):
        pass
