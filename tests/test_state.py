"""TrainState: the one checkpoint root, restored by one function in every tool; one step body."""

import ast
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from mnist_tf import api, evaluate, export, inference
from mnist_tf.config import TrainConfig
from mnist_tf.training import state as train_state
from mnist_tf.training import trainer

PACKAGE = Path(__file__).resolve().parents[1] / "mnist_tf"
# Without XLA (the default): these tests need the arithmetic, and compiling would
# double their time; the XLA path has tests of its own.
SMALL = dict(jit_compile=False,
             hidden_sizes=(16,), batch_size=50, validation_size=100, log_every_steps=5,
             checkpoint_every_steps=5, eval_batch_size=100, histogram_every_steps=0)


def test_the_state_is_created_eagerly_with_the_checkpoints_layout(tmp_path):
    state = train_state.TrainState(TrainConfig(hidden_sizes=(8,), seed=3))
    assert [tuple(v.shape) for v in state.model.parameters()] == [(784, 8), (8,), (8, 10), (10,)]
    assert [tuple(m.shape) for m in state.optimizer.m] == [(784, 8), (8,), (8, 10), (10,)]
    assert state.step == 0
    manager = train_state.make_manager(state, str(tmp_path))
    path = manager.save(checkpoint_number=0)
    roots = {name.split("/")[0] for name, _ in tf.train.list_variables(path)}
    assert roots == {"model", "optimizer", "rng", "loss_scale", "config", "save_counter",
                     "_CHECKPOINTABLE_OBJECT_GRAPH"}


def test_step_counts_skipped_updates_as_trained_batches():
    state = train_state.TrainState(TrainConfig(hidden_sizes=(8,), nan_policy="skip_step"))
    state.optimizer.step.assign(7)
    state.loss_scale.skipped_steps.assign(2)
    assert state.step == 9  # The data position: 9 batches consumed.


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_data_dir):
    workdir = tmp_path_factory.mktemp("run")
    trainer.train_and_evaluate(TrainConfig(**SMALL, train_steps=10), str(workdir),
                               data_dir=small_data_dir, allow_download=False,
                               log=lambda line: None)
    return workdir


def test_every_tool_restores_through_the_one_restore(trained, small_data_dir, tmp_path,
                                                     monkeypatch):
    calls = []
    original = train_state.restore

    def spy(state, workdir, *args, **kwargs):
        calls.append(str(workdir))
        return original(state, workdir, *args, **kwargs)

    monkeypatch.setattr(train_state, "restore", spy)
    workdir = str(trained)
    evaluate.evaluate_checkpoint(workdir, "test", data_dir=small_data_dir, allow_download=False)
    classifier = api.load(workdir)  # predict and export go through this load.
    classifier.predict(np.zeros((2, 28, 28), np.uint8))
    classifier.export(str(tmp_path / "exported"))
    export.export_model(workdir, str(tmp_path / "exported_cli"))
    trainer.train_and_evaluate(TrainConfig(**SMALL, train_steps=15), workdir,
                               data_dir=small_data_dir, allow_download=False,
                               log=lambda line: None)
    assert calls == [workdir] * 4


def test_a_damaged_newest_checkpoint_falls_back_in_predict_too(trained, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(trained, workdir)
    newest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    data_file = next((workdir / "checkpoints").glob(f"{Path(newest).name}.data-*"))
    data_file.write_bytes(data_file.read_bytes()[:100])
    lines = []
    loaded = inference.load_model(str(workdir), log=lines.append)  # What predict uses.
    assert loaded.checkpoint != newest and loaded.step < int(newest.rsplit("-", 1)[1])
    assert len(lines) == 1 and "damaged" in lines[0] and Path(newest).name in lines[0]


def calls_in(path: Path, attribute: str) -> int:
    tree = ast.parse(path.read_text())
    return sum(1 for node in ast.walk(tree)
               if isinstance(node, ast.Attribute) and node.attr == attribute)


def test_there_is_one_step_body():
    # The maths of a training step (tape, gradients, Adam's update) is written
    # once, in training/steps.py; the runners only trace and feed it.
    where = {path.relative_to(PACKAGE).as_posix(): calls_in(path, "GradientTape")
             for path in PACKAGE.rglob("*.py")}
    assert {name for name, count in where.items() if count} == {"training/steps.py"}
    assert calls_in(PACKAGE / "training" / "steps.py", "GradientTape") == 1
    for runner in ("runners.py", "trainer.py"):
        assert calls_in(PACKAGE / "training" / runner, "gradient") == 0
