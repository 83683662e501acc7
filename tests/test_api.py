"""The Python API (`mnist_tf.load`, `Classifier`), its lazy imports, and the README's snippet."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mnist_tf
from mnist_tf import api, evaluate, export, inference, predict
from mnist_tf import workdir as workdir_module
from mnist_tf.errors import CheckpointError, UserError

REPO = Path(__file__).resolve().parents[1]
# Checkpoints at steps 10 and 20; 100 validation examples carved from 600.
# Without XLA (the default): these tests need the arithmetic, and compiling would
# double their time; the XLA path has tests of its own.
SMALL = dict(jit_compile=False,
             hidden_sizes=(16,), batch_size=32, train_steps=20, validation_size=100,
             learning_rate=3e-3, log_every_steps=10, checkpoint_every_steps=10,
             eval_batch_size=64)


def quiet(line):
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_data_dir):
    """A workdir trained once for this file through the API, and its results."""
    workdir = tmp_path_factory.mktemp("run")
    results = mnist_tf.train_and_evaluate(mnist_tf.TrainConfig(**SMALL), str(workdir),
                                          data_dir=small_data_dir, allow_download=False,
                                          log=quiet)
    return workdir, results


@pytest.fixture(scope="module")
def classifier(trained):
    return mnist_tf.load(trained[0])


@pytest.fixture(scope="module")
def test_split(small_data_dir):
    """The 200 test images as TFDS stores them (uint8 [N, 28, 28, 1]) and their labels."""
    import tensorflow_datasets as tfds

    data = tfds.as_numpy(tfds.load("mnist", split="test", batch_size=-1,
                                   data_dir=small_data_dir, download=False))
    return data["image"], data["label"]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_one_line_user_error(caught, *fragments):
    message = str(caught.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


# ----------------------------------------------------------------------------
# The package: cheap to import, names resolved on first use.


def test_import_and_train_config_do_not_load_tensorflow():
    code = ("import sys, mnist_tf\n"
            "config = mnist_tf.TrainConfig(hidden_sizes=(16,))\n"
            "assert config.hidden_sizes == (16,)\n"
            "assert 'tensorflow' not in sys.modules, 'TrainConfig loaded TensorFlow'\n"
            "assert set(mnist_tf.__all__) <= set(dir(mnist_tf))\n"
            "print(sorted(mnist_tf.__all__))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['Classifier', 'TrainConfig', 'load', 'train_and_evaluate']"


def test_public_names_are_the_library_functions():
    from mnist_tf import config

    assert mnist_tf.TrainConfig is config.TrainConfig
    assert mnist_tf.train_and_evaluate is api.train_and_evaluate
    assert mnist_tf.load is api.load and mnist_tf.Classifier is api.Classifier
    with pytest.raises(AttributeError, match="no attribute 'predict_everything'"):
        mnist_tf.predict_everything  # noqa: B018


# ----------------------------------------------------------------------------
# load.


def test_load_restores_the_newest_checkpoint(trained, classifier):
    workdir, _ = trained
    assert classifier.workdir == str(workdir)
    assert classifier.checkpoint == str(workdir / "checkpoints" / "ckpt-20")
    assert classifier.step == 20
    assert classifier.config == workdir_module.read_config(str(workdir))
    assert classifier.config.hidden_sizes == (16,)
    assert [v.shape.as_list() for v in classifier.model.parameters()] == [
        [784, 16], [16], [16, 10], [10]]
    assert repr(classifier) == (f"Classifier(checkpoint='{workdir}/checkpoints/ckpt-20', "
                                "step=20, hidden_sizes=[16], weights='trained')")


def test_load_a_named_checkpoint(trained):
    workdir, _ = trained
    older = mnist_tf.load(workdir, workdir / "checkpoints" / "ckpt-10")  # Paths work too.
    assert older.step == 10 and older.checkpoint.endswith("ckpt-10")


def test_load_problems_are_one_line_user_errors(trained, tmp_path):
    with pytest.raises(UserError) as caught:
        mnist_tf.load(tmp_path / "missing")
    assert_one_line_user_error(caught, str(tmp_path / "missing"), "does not exist",
                               "train a model there first")
    with pytest.raises(UserError) as caught:
        mnist_tf.load(tmp_path)
    assert_one_line_user_error(caught, "holds no trained run")
    with pytest.raises(CheckpointError) as caught:
        mnist_tf.load(trained[0], checkpoint=str(trained[0] / "checkpoints" / "ckpt-99"))
    assert_one_line_user_error(caught, "ckpt-99")


# ----------------------------------------------------------------------------
# predict.


def test_predict_matches_the_predict_tool_and_the_model(trained, classifier, test_split):
    import tensorflow as tf

    from mnist_tf.constants import normalize

    images, labels = test_split
    assert images.dtype == np.uint8 and images.shape == (200, 28, 28, 1)
    out = classifier.predict(images)
    assert set(out) == {"classes", "probabilities"}
    assert out["classes"].dtype == np.int64 and out["classes"].shape == (200,)
    assert out["probabilities"].dtype == np.float32 and out["probabilities"].shape == (200, 10)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out["classes"], out["probabilities"].argmax(axis=1))

    # `python -m mnist_tf.predict`'s library path, on a separately restored model.
    loaded = inference.load_model(str(trained[0]))
    tool = np.array(predict.classify(loaded.model, images[..., 0]))
    np.testing.assert_array_equal(out["classes"], tool.argmax(axis=1))
    np.testing.assert_allclose(out["probabilities"], tool, atol=1e-6, rtol=0)
    # The model itself, eagerly (so fused kernels and batch sizes differ in the last bits).
    direct = tf.nn.softmax(classifier.model(normalize(images), training=False)).numpy()
    np.testing.assert_array_equal(out["classes"], direct.argmax(axis=1))
    np.testing.assert_allclose(out["probabilities"], direct, atol=1e-6, rtol=0)
    # The run's own final test accuracy was measured on these 200 images.
    assert np.mean(out["classes"] == labels) == pytest.approx(trained[1]["test_accuracy"])


@pytest.mark.parametrize("layout", ["hw", "flat", "int64", "float32", "float64", "list",
                                    "batch_of_one"])
def test_every_accepted_layout_gives_the_same_answer(classifier, test_split, layout):
    images = test_split[0][:50]
    expected = classifier.predict(images)
    converted = {
        "hw": lambda: images[..., 0],
        "flat": lambda: images.reshape(50, 784),
        "int64": lambda: images.astype(np.int64),
        "float32": lambda: images.astype(np.float32) / np.float32(255),
        "float64": lambda: images / 255.0,
        "list": lambda: images[..., 0].tolist(),
        "batch_of_one": lambda: images[:1],
    }[layout]()
    out = classifier.predict(converted)
    count = 1 if layout == "batch_of_one" else 50
    np.testing.assert_array_equal(out["classes"], expected["classes"][:count])
    np.testing.assert_allclose(out["probabilities"], expected["probabilities"][:count],
                               atol=1e-6, rtol=0)


def test_one_image_and_an_empty_batch(classifier, test_split):
    image = test_split[0][7, ..., 0]
    out = classifier.predict(image)
    assert out["classes"].shape == (1,) and out["probabilities"].shape == (1, 10)
    assert out["classes"][0] == classifier.predict(test_split[0])["classes"][7]
    empty = classifier.predict(np.zeros((0, 28, 28), np.uint8))
    assert empty["classes"].shape == (0,) and empty["probabilities"].shape == (0, 10)


@pytest.mark.parametrize("images, fragments", [
    (np.zeros((4, 32, 32), np.uint8), ["shape [4, 32, 32] is not [N, 28, 28]", "resize"]),
    (np.zeros((28, 28, 1), np.uint8), ["shape [28, 28, 1]"]),
    (np.zeros((4, 28, 28, 3), np.uint8), ["shape [4, 28, 28, 3]"]),
    (np.zeros(784, np.uint8), ["shape [784]"]),
    (np.full((2, 28, 28), 255.0, np.float32),
     ["float pixels must lie in [0, 1], got 255 to 255", "divide by 255 or pass uint8"]),
    (np.full((2, 28, 28), -0.5), ["float pixels must lie in [0, 1], got -0.5"]),
    (np.full((2, 28, 28), np.nan, np.float32), ["NaN or infinite"]),
    (np.full((2, 28, 28), 300, np.int64), ["integer pixels must lie in 0..255, got 300"]),
    (np.full((2, 28, 28), -1, np.int32), ["integer pixels must lie in 0..255, got -1"]),
    (np.zeros((2, 28, 28), bool), ["dtype bool is not pixel data"]),
    (np.full((2, 28, 28), "0"), ["dtype <U1 is not pixel data"]),
    ([np.zeros((28, 28)), np.zeros((27, 28))], ["cannot be read as one array"]),
])
def test_bad_images_are_one_line_user_errors(classifier, images, fragments):
    with pytest.raises(UserError) as caught:
        classifier.predict(images)
    assert str(caught.value).startswith("images: ")
    assert_one_line_user_error(caught, *fragments)


def test_predict_takes_files_and_pillow_images_as_the_predict_tool_does(trained, classifier,
                                                                     test_split, tmp_path):
    import warnings

    from PIL import Image

    paths = []
    for i in range(3):  # Test digits drawn dark on white, three times MNIST's size.
        paths.append(tmp_path / f"digit_{i}.png")
        Image.fromarray(255 - test_split[0][i, ..., 0]).resize((84, 84)).save(paths[-1])
    # `python -m mnist_tf.predict`'s library path, on a separately restored model.
    loaded = inference.load_model(str(trained[0]))
    tool = predict.predict_files(loaded.model, [str(path) for path in paths])
    for images in ([str(path) for path in paths], paths, [Image.open(path) for path in paths]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Prepared digits are white on black: no warning.
            out = classifier.predict(images)
        np.testing.assert_array_equal(out["classes"], [p.digit for p in tool])
        np.testing.assert_allclose(out["probabilities"], [p.probabilities for p in tool],
                                   atol=1e-6, rtol=0)
    one = classifier.predict(str(paths[1]))
    assert one["classes"].shape == (1,) and one["classes"][0] == tool[1].digit
    assert classifier.predict(Image.open(paths[2]))["classes"][0] == tool[2].digit
    with pytest.raises(UserError) as caught:
        classifier.predict(str(tmp_path / "missing.png"))
    assert_one_line_user_error(caught, "missing.png: no such file")


# ----------------------------------------------------------------------------
# evaluate and export: the command-line tools' results.


@pytest.mark.parametrize("split", ["test", "validation"])
def test_evaluate_equals_the_evaluate_tool_and_writes_nothing(trained, classifier,
                                                               small_data_dir, split):
    workdir, _ = trained
    before = snapshot(workdir)
    results = classifier.evaluate(split, data_dir=small_data_dir, allow_download=False,
                                  log=quiet)
    assert snapshot(workdir) == before
    tool = evaluate.evaluate_checkpoint(str(workdir), split, data_dir=small_data_dir,
                                        allow_download=False, log=quiet)
    assert "files" not in results
    assert results == {k: v for k, v in tool.items() if k != "files"}
    assert results["num_examples"] == (200 if split == "test" else 100)
    assert np.trace(results["confusion_matrix"]) == round(results["accuracy"]
                                                           * results["num_examples"])


def test_evaluate_can_write_the_tools_files(trained, classifier, small_data_dir, tmp_path):
    import shutil

    copy = mnist_tf.load(shutil.copytree(trained[0], tmp_path / "run"))
    results = copy.evaluate(data_dir=small_data_dir, allow_download=False, log=quiet,
                            write_files=True)
    assert results["files"]["results"] == str(tmp_path / "run" / "eval.json")
    assert json.loads((tmp_path / "run" / "eval.json").read_text()) == results
    assert (tmp_path / "run" / "confusion_matrix_test.png").is_file()


def test_evaluate_rejects_an_unknown_split(classifier):
    with pytest.raises(UserError) as caught:
        classifier.evaluate("train")
    assert_one_line_user_error(caught, "unknown split 'train'", "test, validation")


def test_export_writes_the_export_tools_saved_model(trained, classifier, test_split, tmp_path):
    import tensorflow as tf

    info = classifier.export(tmp_path / "model")
    assert info["export_dir"] == str(tmp_path / "model")
    assert info["checkpoint"] == classifier.checkpoint and info["step"] == 20
    recorded = json.loads((tmp_path / "model" / export.METADATA_FILE).read_text())
    assert recorded == info
    tool = export.export_model(str(trained[0]), str(tmp_path / "by_tool"))
    assert {**tool, "export_dir": info["export_dir"]} == info

    images = test_split[0]
    served = tf.saved_model.load(str(tmp_path / "model")).signatures["serving_default"](
        images=tf.constant(images))
    expected = classifier.predict(images)
    np.testing.assert_array_equal(served["classes"].numpy(), expected["classes"])
    np.testing.assert_allclose(served["probabilities"].numpy(), expected["probabilities"],
                               atol=1e-5, rtol=0)

    with pytest.raises(UserError) as caught:  # Exports are never overwritten.
        classifier.export(tmp_path / "model")
    assert_one_line_user_error(caught, "already exists and is not empty", "overwrite=True")
    assert "--" not in str(caught.value)

    # Restart & Run All: overwrite=True replaces the export.
    again = classifier.export(tmp_path / "model", overwrite=True)
    assert again == info
    assert json.loads((tmp_path / "model" / export.METADATA_FILE).read_text()) == info
    assert sorted(p.name for p in tmp_path.iterdir()) == ["by_tool", "model"]


# ----------------------------------------------------------------------------
# The "From Python" snippet of docs/python.md, run as written apart from size and data.


def readme_snippet() -> str:
    text = (REPO / "docs" / "python.md").read_text()
    section = text.split("\n## From Python\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def replace_once(code: str, old: str, new: str) -> str:
    assert code.count(old) == 1, f"the README snippet no longer contains {old!r}"
    return code.replace(old, new)


def test_readme_snippet_runs(small_data_dir, tmp_path, monkeypatch, capsys):
    code = readme_snippet()
    # The same calls on the synthetic data set, with a model small enough to train in
    # seconds, without XLA (its compile would be most of the run).
    code = replace_once(code, "data_dir = None", f"data_dir = {small_data_dir!r}")
    code = replace_once(code, "mnist_tf.TrainConfig(hidden_sizes=(128,), epochs=1)",
                        "mnist_tf.TrainConfig(hidden_sizes=(16,), train_steps=20, "
                        "validation_size=100, batch_size=32, jit_compile=False)")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)

    assert namespace["classifier"].step == 20
    assert namespace["out"]["classes"].shape == (8,)
    assert namespace["metrics"]["accuracy"] == pytest.approx(
        namespace["results"]["test_accuracy"])
    assert os.path.isfile(tmp_path / "runs" / "notebook" / "results.json")
    assert os.path.isfile(tmp_path / "exports" / "notebook" / "saved_model.pb")
    assert "test accuracy" in capsys.readouterr().out


# ----------------------------------------------------------------------------
# The API leaves the caller's process as it found it.


API_HYGIENE = """
import os, sys
before = dict(os.environ)
from absl import flags
import mnist_tf
classifier = mnist_tf.load(sys.argv[1])
classifier.predict(__import__("numpy").zeros((2, 28, 28), "uint8"))
classifier.export(sys.argv[2])
classifier.export(sys.argv[2], overwrite=True)
entry_points = [m for m in ("cli", "train", "evaluate", "predict", "export", "plot")
                if "mnist_tf." + m in sys.modules]
print(dict(os.environ) == before, entry_points, list(flags.FLAGS), sep="|")
"""


def test_the_api_changes_no_environment_or_flags_and_is_quiet(trained, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "MNIST_TF_VERBOSE")}
    result = subprocess.run([sys.executable, "-c", API_HYGIENE, str(trained[0]),
                             str(tmp_path / "export")],
                            capture_output=True, text=True, env=env, check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    unchanged, entry_points, defined = result.stdout.strip().split("|")
    assert unchanged == "True"  # TF_CPP_MIN_LOG_LEVEL set only while TensorFlow loads.
    assert entry_points == "[]"
    assert "export_dir" not in defined and "workdir" not in defined
    assert "INFO:tensorflow" not in result.stderr and "Assets written" not in result.stderr
    assert "absl::InitializeLog" not in result.stderr


def test_api_errors_name_arguments_not_flags(trained, small_data_dir):
    config = mnist_tf.TrainConfig(**{**SMALL, "hidden_sizes": (8,)})
    with pytest.raises(UserError) as caught:
        mnist_tf.train_and_evaluate(config, str(trained[0]), data_dir=small_data_dir,
                                    allow_download=False, log=quiet)
    assert "--" not in str(caught.value), str(caught.value)
    assert "hidden_sizes" in str(caught.value)


def test_logging_levels_are_restored(classifier, test_split):
    import logging as std_logging

    logger = std_logging.getLogger("tensorflow")
    logger.setLevel(std_logging.DEBUG)
    try:
        classifier.predict(test_split[0][:2])
        assert logger.level == std_logging.DEBUG
    finally:
        logger.setLevel(std_logging.NOTSET)


def test_dark_digits_on_light_paper_warn(classifier):
    paper = np.full((1, 28, 28), 255, np.uint8)
    paper[0, 10:18, 13:15] = 0
    with pytest.warns(UserWarning, match="mostly bright"):
        classifier.predict(paper)
    with pytest.warns(UserWarning, match="mostly bright"):
        classifier.predict(paper / 255.0)
