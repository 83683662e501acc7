"""TensorBoard output: a real `tensorboard` (loopback only) serves what tiny runs wrote."""

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from mnist_tf.config import ConfigError, TrainConfig, hparam_names, parse_profile_steps
from mnist_tf.training import evaluation, trainer
from mnist_tf.workdir import SUMMARY_SUBDIR

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # Never any other address: the test must not listen outside the machine.
# Without XLA (the default): these tests need the arithmetic, and compiling would
# double their time; the XLA path has tests of its own.
SMALL = dict(jit_compile=False,
             hidden_sizes=(16,), batch_size=32, validation_size=100, log_every_steps=4,
             eval_batch_size=64)
PARAMETERS = ("hidden_0/kernel", "hidden_0/bias", "logits/kernel", "logits/bias")


def train(config, workdir, data_dir):
    return trainer.train_and_evaluate(config, str(workdir), data_dir=data_dir,
                                      allow_download=False, log=lambda line: None)


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tensorboard(logdir, log_path, timeout=30.0):
    """Runs `tensorboard --logdir logdir` on 127.0.0.1; yields a JSON getter/poster."""
    port = free_port()
    base = f"http://{HOST}:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
             "--host", HOST, "--port", str(port), "--reload_interval", "1",
             # The Python loader: no extra data-server process (and port).
             "--load_fast", "false"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        def fetch(path, body=None, raw=False):
            request = urllib.request.Request(
                base + path, data=None if body is None else json.dumps(body).encode(),
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                data = response.read()
            return data if raw else json.loads(data)

        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"tensorboard exited with {process.returncode}:\n"
                            + Path(log_path).read_text(errors="replace")[-2000:])
            try:
                fetch("/data/runs")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"tensorboard did not answer on {base} within {timeout}s")
                time.sleep(0.25)
        yield fetch
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def poll(fetch, path, ready, timeout=30.0):
    """Fetches `path` until `ready(answer)`: TensorBoard loads event files in the background."""
    deadline = time.monotonic() + timeout
    while True:
        answer = fetch(path)
        if ready(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(0.25)


def test_tensorboard_serves_every_dashboard(tmp_path, small_data_dir):
    runs = tmp_path / "runs"
    # "a" has everything on; "b" (another learning rate, histograms off) is the
    # second row of the HParams comparison.
    a = TrainConfig(**SMALL, train_steps=8, histogram_every_steps=4, profile_steps=(2, 4))
    b = TrainConfig(**SMALL, train_steps=4, learning_rate=3e-3, histogram_every_steps=0)
    results_a = train(a, runs / "a", small_data_dir)
    train(b, runs / "b", small_data_dir)

    # The runs are the workdir's own directories (SUMMARY_SUBDIR is the workdir).
    assert SUMMARY_SUBDIR == ""
    assert list((runs / "a/train/plugins/profile").glob("*/*.xplane.pb"))
    assert not (runs / "b/train/plugins").exists()

    with tensorboard(runs, tmp_path / "tensorboard.log") as fetch:
        expected_runs = {f"{r}/{s}" for r in "ab" for s in ("train", "validation", "test")}
        scalars = poll(fetch, "/data/plugin/scalars/tags",
                       lambda tags: expected_runs <= set(tags))
        assert set(scalars) == expected_runs  # No one-point copies in a run of their own.
        assert not any("summaries" in run for run in fetch("/data/runs"))
        for run in "ab":
            assert set(scalars[f"{run}/train"]) == {
                "loss", "accuracy", "learning_rate", "examples_per_second", "grad_norm"}
            assert set(scalars[f"{run}/validation"]) == {"loss", "accuracy"}
            assert set(scalars[f"{run}/test"]) == {"loss", "accuracy"}

        image_tags = fetch("/data/plugin/images/tags")
        assert set(image_tags["a/test"]) == {"confusion_matrix", "misclassified"}
        query = urllib.parse.urlencode({"run": "a/test", "tag": "confusion_matrix"})
        [entry] = fetch(f"/data/plugin/images/images?{query}")
        assert entry["step"] == 8
        png = fetch(f"/data/plugin/images/individualImage?{entry['query']}", raw=True)
        assert min(Image.open(io.BytesIO(png)).size) > 300  # 10x10 cells and margins.

        histograms = fetch("/data/plugin/histograms/tags")
        assert set(histograms) == {"a/train"}  # "b" turned them off.
        assert set(histograms["a/train"]) == {
            f"{kind}/{name}" for kind in ("weights", "gradients") for name in PARAMETERS}
        query = urllib.parse.urlencode({"run": "a/train", "tag": "gradients/hidden_0/kernel"})
        assert [step for _, step, _ in fetch(f"/data/plugin/histograms/histograms?{query}")] == [
            4, 8]

        graphs = fetch("/data/plugin/graphs/info")
        assert graphs["a/train"]["run_graph"]
        query = urllib.parse.urlencode({"run": "a/train"})
        graph = fetch(f"/data/plugin/graphs/graph?{query}", raw=True).decode()
        # The train step: the dense layers' matmuls and Adam's in-place update.
        assert "MatMul" in graph and "AssignSubVariableOp" in graph

        query = urllib.parse.urlencode({"run": "a", "tag": "layers"})
        [text] = fetch(f"/data/plugin/text/text?{query}")
        assert "hidden_0" in text["text"] and "total: 12,730 parameters" in text["text"]

        check_hparams(fetch, results_a)


def check_hparams(fetch, results_a):
    """The HParams dashboard: declared columns in order, the runs' curves as metrics."""
    experiment = fetch("/data/plugin/hparams/experiment", {"experimentName": ""})
    # TensorBoard lists (and ticks the first five of) the columns in the order
    # declared in mnist_tf/config.py, under the settings' names.
    assert [info["displayName"] for info in experiment["hparamInfos"]] == hparam_names()
    assert hparam_names()[:5] == [
        "hidden_sizes", "learning_rate", "lr_schedule", "dropout", "epochs"]
    ids = {info["displayName"]: info["name"] for info in experiment["hparamInfos"]}
    # The metrics are the validation and test curves, not copies of them.
    assert [(m["name"]["group"], m["name"]["tag"]) for m in experiment["metricInfos"]] == [
        ("validation", "accuracy"), ("validation", "loss"), ("test", "accuracy"),
        ("test", "loss")]
    groups = fetch("/data/plugin/hparams/session_groups", {
        "experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                            "STATUS_RUNNING"]})
    by_name = {group["name"]: group for group in groups["sessionGroups"]}
    assert set(by_name) == {"a", "b"}  # A row per workdir, named after it.
    row = by_name["a"]
    assert row["hparams"][ids["hidden_sizes"]] == "16"
    assert row["hparams"][ids["learning_rate"]] == pytest.approx(1e-3)
    assert by_name["b"]["hparams"][ids["learning_rate"]] == pytest.approx(3e-3)
    metrics = {(m["name"]["group"], m["name"]["tag"]): m for m in row["metricValues"]}
    assert metrics["test", "accuracy"]["value"] == pytest.approx(results_a["test_accuracy"])
    assert metrics["validation", "loss"]["value"] == pytest.approx(
        results_a["validation_loss"])
    assert metrics["test", "accuracy"]["trainingStep"] == 8


def test_hparam_columns_are_the_hparam_settings_most_varied_first():
    from mnist_tf.config import LEADING_HPARAMS, settings
    from mnist_tf.training.summaries import hparam_columns

    names = hparam_names()
    assert sorted(names) == sorted(TrainConfig().hparams())  # Every hparam, once.
    assert names[:len(LEADING_HPARAMS)] == list(LEADING_HPARAMS)
    # The rest keep their field order: the augmentation settings come last.
    rest = [name for name in settings() if name in names[len(LEADING_HPARAMS):]]
    assert names[len(LEADING_HPARAMS):] == rest
    assert names[-1].startswith("augment_")

    columns = hparam_columns()
    assert list(columns) == names
    # TensorBoard orders columns by id: the ids sort in the declared order.
    ids = [column.name for column in columns.values()]
    assert sorted(ids) == ids and ids[0] == "01_hidden_sizes"
    assert [column.display_name for column in columns.values()] == names
    assert columns["lr_schedule"].domain.values == ["constant", "cosine"]
    assert columns["deterministic"].domain.values == [False, True]
    assert columns["learning_rate"].domain.dtype is float  # Numbers: linear axes.
    assert columns["hidden_sizes"].domain is None  # Free text.
    assert columns["dropout"].description == settings()["dropout"].help


def test_images_come_from_the_same_pass_as_the_test_metrics(tmp_path, small_data_dir):
    import tensorflow as tf

    from mnist_tf.data import pipeline
    from mnist_tf.model.mlp import MLP
    from mnist_tf.training.steps import Metrics, make_eval_step

    splits = pipeline.load_splits(small_data_dir, validation_size=100)
    model = MLP((16,), seed=0)
    metrics = Metrics()
    eval_step = make_eval_step(model, metrics, batch_size=64)
    result = evaluation.evaluate(eval_step, metrics, pipeline.eval_batches(splits.test, 64),
                                 max_mistakes=5)

    assert result.confusion.sum() == splits.num_test == 200  # Padding rows excluded.
    correct = int(result.confusion.trace())
    assert result.metrics["accuracy"] == correct / 200
    wrong_images, labels, predicted = result.mistakes
    assert wrong_images.shape == (5, 784) and (labels != predicted).all()
    probabilities = tf.nn.softmax(model(tf.constant(wrong_images))).numpy()
    assert (probabilities.argmax(axis=1) == predicted).all()
    assert eval_step.experimental_get_tracing_count() == 1
    assert set(evaluation.evaluation_images(result)) == {"confusion_matrix", "misclassified"}
    batches = pipeline.eval_batches(splits.test, 64)
    assert evaluation.evaluate(eval_step, metrics, batches).confusion is None


def test_histogram_buckets_match_numpy():
    import numpy as np
    import tensorflow as tf

    from mnist_tf.training.summaries import histogram_buckets

    values = np.random.default_rng(0).normal(size=(784, 64)).astype(np.float32)
    buckets = histogram_buckets(tf.constant(values)).numpy()
    counts, edges = np.histogram(values.astype(np.float64), bins=30)
    assert buckets.shape == (30, 3) and buckets.dtype == np.float64
    np.testing.assert_allclose(buckets[:, 0], edges[:-1])
    np.testing.assert_allclose(buckets[:, 1], edges[1:])
    # The maximum falls in the last, closed bucket; nothing is lost.
    assert buckets[-1, 1] == values.max() and buckets[:, 2].sum() == values.size
    np.testing.assert_array_equal(buckets[:, 2], counts)

    with_nan = np.array([1.0, np.nan, 3.0, np.inf, 3.0], np.float32)
    assert histogram_buckets(tf.constant(with_nan))[:, 2].numpy().sum() == 3
    constant = histogram_buckets(tf.zeros([5])).numpy()
    assert constant[:, 2].sum() == 5 and (constant[:, :2] == 0).all()
    assert (histogram_buckets(tf.constant([np.nan])).numpy() == 0).all()


@pytest.mark.parametrize("text, steps", [("", ()), ("100,110", (100, 110)), (" 0, 1 ", (0, 1))])
def test_parse_profile_steps(text, steps):
    assert parse_profile_steps(text) == steps


@pytest.mark.parametrize("text", ["5", "5,2", "3,3", "-1,4", "a,b", "1,2,3", "1.5,3"])
def test_parse_profile_steps_rejects(text):
    with pytest.raises(ConfigError) as info:
        parse_profile_steps(text)
    assert info.value.field == "profile_steps"
    assert str(info.value).startswith("--profile_steps:")


def test_new_config_fields_validate_and_round_trip():
    with pytest.raises(ConfigError, match="--histogram_every_steps"):
        TrainConfig(histogram_every_steps=-1)
    with pytest.raises(ConfigError, match="--profile_steps"):
        TrainConfig(profile_steps=(4, 2))
    config = TrainConfig(hidden_sizes=(8, 4), profile_steps=(2, 4))
    assert config.to_dict()["profile_steps"] == [2, 4]
    # config.json holds a list; reading it back gives an equal config.
    assert TrainConfig(**{**config.to_dict(), "hidden_sizes": (8, 4)}) == config
    hparams = config.hparams()
    assert hparams["hidden_sizes"] == "8,4"
    assert TrainConfig(hidden_sizes=()).hparams()["hidden_sizes"] == "none"
    assert all(isinstance(v, (bool, int, float, str)) for v in hparams.values())


def test_bad_profile_steps_flag_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MNIST_TF_VERBOSE"}
    result = subprocess.run(
        [sys.executable, "-m", "mnist_tf.train", "--profile_steps=10,5",
         f"--workdir={tmp_path / 'w'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: --profile_steps: needs 0 <= START < END, got 10,5 (e.g. 100,110)"]
    assert not (tmp_path / "w").exists()


def _session_records(workdir):
    """The HParams session_start_info records in `workdir`'s session event files, in order."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    records = []
    for path in sorted(Path(workdir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != metadata.PLUGIN_NAME:
                    continue
                data = plugin_data_pb2.HParamsPluginData.FromString(
                    value.metadata.plugin_data.content)
                if data.HasField("session_start_info"):
                    records.append(data.session_start_info)
    return records


def test_hparams_show_the_latest_start_and_integers_as_written(tmp_path):
    from mnist_tf.training.summaries import SummaryWriters, hparam_columns

    ids = {name: column.name for name, column in hparam_columns().items()}
    for epochs in (1, 10):  # The first start, then a resume to more epochs.
        writers = SummaryWriters(str(tmp_path))
        writers.hparams(TrainConfig(**{**SMALL, "epochs": epochs}))
        writers.close()
    # TensorBoard keeps the first record it reads: only this start's is left.
    [record] = _session_records(tmp_path)
    assert record.hparams[ids["epochs"]].string_value == "10"  # Not 10.000.
    assert record.hparams[ids["learning_rate"]].number_value == pytest.approx(1e-3)
    assert hparam_columns()["epochs"].domain is None
