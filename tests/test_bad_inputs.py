"""A catalogue of bad inputs to every entry point.

Each must end with exit status 2 and one stderr line naming the culprit, no
traceback, and leave the existing checkpoints, results and data byte for byte
as they were. They run as on a machine without network (pip has no index), so
a case that fetches anything before refusing fails differently and is caught.
"""

import hashlib
import json
import os
import shutil

import pytest
from conftest import assert_usage_error, run_module

from mnist_tf.config import TrainConfig
from mnist_tf.data import pipeline
from mnist_tf.training import trainer


def snapshot(*roots):
    """sha256 of every file under the roots, by path (the workdir lock's pid aside)."""
    digests = {}
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                if name == "train.lock":  # Holds the pid of the last run that locked it.
                    continue
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    digests[path] = hashlib.sha256(f.read()).hexdigest()
    return digests


@pytest.fixture(scope="module")
def world(tmp_path_factory, small_data_dir):
    """A trained workdir, its data, and assorted bad files, all in one place."""
    root = tmp_path_factory.mktemp("world")
    data_dir = root / "tfds"
    shutil.copytree(small_data_dir, data_dir)
    workdir = root / "run"
    # Without XLA (compiling would be most of the fixture's time); --jit_compile
    # may change on resume, so the cases' default flags still match its config.json.
    trainer.train_and_evaluate(
        TrainConfig(hidden_sizes=(16,), batch_size=50, train_steps=6, validation_size=100,
                    log_every_steps=3, checkpoint_every_steps=3, eval_batch_size=100,
                    jit_compile=False),
        str(workdir), data_dir=str(data_dir), allow_download=False, log=lambda line: None)
    pipeline.load_splits(str(data_dir), 100)  # The decoded cache exists before the snapshot.
    (root / "not_an_image.png").write_text("hello")
    (root / "a_file").write_text("not a directory")
    (root / "bad.cfg").write_text("--hiden_sizes=32\n")
    (root / "export").mkdir()
    (root / "export" / "keep.txt").write_text("someone's file")
    # A prepared-looking data dir whose preparation was interrupted.
    (root / "half" / "mnist" / "3.0.1").mkdir(parents=True)
    # A prepared copy with damaged records.
    damaged = root / "damaged"
    shutil.copytree(small_data_dir, damaged, ignore=shutil.ignore_patterns("mnist_tf_decoded"))
    for folder, _, names in os.walk(damaged):
        for name in names:
            if ".tfrecord" in name:
                with open(os.path.join(folder, name), "r+b") as f:
                    f.seek(20)
                    f.write(b"\xff" * 40)
    # A prepared copy of another version of the dataset (its metadata says 1.0.0).
    wrong = root / "wrong_version"
    shutil.copytree(small_data_dir, wrong, ignore=shutil.ignore_patterns("mnist_tf_decoded"))
    info_path = wrong / "mnist" / "3.0.1" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["version"] = "1.0.0"
    info_path.write_text(json.dumps(info))
    # An empty data dir, and an empty directory given as the IDX files' source.
    (root / "empty").mkdir()
    (root / "empty_manual").mkdir()
    # A workdir whose only checkpoint is truncated.
    broken = root / "broken"
    shutil.copytree(workdir, broken)
    for path in (broken / "checkpoints").glob("*.data-*"):
        path.write_bytes(path.read_bytes()[:50])
    return root


T = "mnist_tf.train"
TRAIN = ["--workdir={root}/run", "--data_dir={root}/tfds", "--nodownload", "--validation_size=100",
         "--batch_size=50", "--hidden_sizes=16"]

CASES = [
    # Flags.
    (T, [*TRAIN, "--hidden_sizes=512,abc"], ["--hidden_sizes", "512,abc"]),
    (T, [*TRAIN, "--batch_size=0"], ["--batch_size", "must be positive"]),
    (T, [*TRAIN, "--learning_rate=-1"], ["--learning_rate", "-1"]),
    (T, [*TRAIN, "--dropout=1.5"], ["--dropout", "1.5"]),
    (T, [*TRAIN, "--precision=fp8"], ["--precision", "fp8", "mixed_float16"]),
    (T, [*TRAIN, "--device=tpu"], ["--device", "tpu"]),
    (T, [*TRAIN, "--device=gpu:1"], ["--device: gpu:1", "no GPU"]),
    (T, [*TRAIN, "--distribution=ring"], ["--distribution", "ring"]),
    (T, [*TRAIN, "--nan_policy=maybe"], ["--nan_policy", "maybe", "skip_step"]),
    (T, [*TRAIN, "--steps_per_call=0"], ["--steps_per_call", "must be positive"]),
    (T, [*TRAIN, "--batch_size=banana"], ["--batch_size", "banana"]),
    # Flagfiles.
    (T, [*TRAIN, "--flagfile={root}/missing.cfg"], ["missing.cfg"]),
    (T, [*TRAIN, "--flagfile={root}/bad.cfg"], ["hiden_sizes"]),
    # Workdirs and checkpoints.
    (T, ["--workdir={root}/a_file", "--data_dir={root}/tfds", "--nodownload"], ["a_file"]),
    (T, [*TRAIN[:-1], "--hidden_sizes=64"], ["--hidden_sizes", "64", "16", "contradicts"]),
    (T, [*TRAIN, "--seed=3"], ["--seed", "3 contradicts 0", "config.json", "another --workdir"]),
    (T, ["--workdir={root}/broken", "--data_dir={root}/tfds", "--nodownload",
         "--validation_size=100", "--batch_size=50", "--hidden_sizes=16"],
     ["ckpt-6", "cannot be restored"]),
    # Data dirs.
    (T, [*TRAIN, "--data_dir={root}/a_file"], ["--data_dir", "a_file", "is a file"]),
    (T, [*TRAIN, "--data_dir={root}/half"], ["3.0.1", "already exists", "remove it"]),
    (T, ["--workdir={root}/fresh", "--data_dir={root}/damaged", "--nodownload",
         "--validation_size=100"],
     ["cannot read the prepared mnist", "damaged"]),
    (T, ["--workdir={root}/fresh", "--data_dir={root}/wrong_version", "--nodownload",
         "--validation_size=100"],
     ["wrong_version", "Proto version: 1.0.0", "mnist/3.0.1 away", "another --data_dir"]),
    (T, ["--workdir={root}/fresh", "--data_dir={root}/empty", "--nodownload",
         "--manual_dir={root}/empty_manual", "--validation_size=100"],
     ["--manual_dir", "empty_manual", "lacks", "train-images-idx3-ubyte.gz"]),
    # Evaluate.
    ("mnist_tf.evaluate", ["--workdir={root}/nowhere", "--data_dir={root}/tfds", "--nodownload"],
     ["nowhere"]),
    ("mnist_tf.evaluate", ["--workdir={root}/run", "--checkpoint={root}/run/checkpoints/ckpt-99",
                           "--data_dir={root}/tfds", "--nodownload"], ["ckpt-99"]),
    ("mnist_tf.evaluate", ["--workdir={root}/run", "--split=train", "--data_dir={root}/tfds",
                           "--nodownload"], ["--split", "train"]),
    # Images.
    ("mnist_tf.predict", ["--workdir={root}/run", "{root}/not_an_image.png"],
     ["not_an_image.png"]),
    ("mnist_tf.predict", ["--workdir={root}/run", "{root}/missing.png"], ["missing.png"]),
    # Export dirs.
    ("mnist_tf.export", ["--workdir={root}/run", "--export_dir={root}/export"],
     ["--export_dir", "not empty"]),
    ("mnist_tf.export", ["--workdir={root}/broken", "--export_dir={root}/new_export"],
     ["ckpt-6"]),
]


CASE_IDS = [f"{i:02d}-{c[0].split('.')[1]}" for i, c in enumerate(CASES)]
# Filled by the cases that pass: case id -> (entry point, its one stderr line).
REFUSALS = {}


@pytest.mark.parametrize("module, args, fragments", CASES, ids=CASE_IDS)
def test_bad_input_is_one_line_and_changes_nothing(world, module, args, fragments, request,
                                                   monkeypatch):
    # Offline: a registry fetch fails at once ("pip could not fetch ...") instead
    # of hiding the refusal the case expects behind a download.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    before = snapshot(world)
    result = run_module(module, *(a.format(root=world) for a in args))
    assert_usage_error(result, *fragments)
    after = snapshot(world)
    # Nothing that existed changed; a refused run may have created only empty
    # bookkeeping (a workdir it was pointed at).
    assert {path: after.get(path) for path in before} == before
    assert not [path for path in set(after) - set(before) if "checkpoints" in path
                or path.endswith(("results.json", ".index", ".npz"))]


    REFUSALS[request.node.callspec.id] = (module, result.stderr.strip())


def test_the_catalogue_refused_twenty_distinct_ways_across_every_entry_point(request):
    # Runs after the cases (same file, same process, collection order).
    collected = {item.callspec.id for item in request.session.items
                 if getattr(item, "originalname", None)
                 == test_bad_input_is_one_line_and_changes_nothing.__name__}
    if collected != set(CASE_IDS):
        pytest.skip("needs the whole catalogue in this session (select the file, not cases)")
    assert sorted(REFUSALS) == sorted(CASE_IDS), "some cases did not end in a clean refusal"
    # Distinct per entry point: one damaged checkpoint may be refused alike by two tools.
    refusals = set(REFUSALS.values())
    assert len(refusals) >= 20, sorted(refusals)
    assert len(refusals) == len(REFUSALS), "two cases of one tool refuse alike: one is redundant"
    assert {module for module, _ in REFUSALS.values()} == {
        "mnist_tf.train", "mnist_tf.evaluate", "mnist_tf.predict", "mnist_tf.export"}
