"""`export --format=tflite`: LiteRT files that reproduce the checkpoint, written atomically."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_usage_error, run_module

from mnist_tf import inference
from mnist_tf.choices import QUANTIZE
from mnist_tf.config import TrainConfig
from mnist_tf.data import pipeline
from mnist_tf.errors import UserError
from mnist_tf.inference import tflite
from mnist_tf.training import trainer

SMALL = dict(jit_compile=False, hidden_sizes=(32,), batch_size=32, train_steps=30,
             validation_size=0, learning_rate=3e-3, log_every_steps=10,
             checkpoint_every_steps=30, eval_batch_size=64)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_data_dir):
    """A workdir trained once for this file (600 synthetic train, 200 test images)."""
    workdir = tmp_path_factory.mktemp("run")
    trainer.train_and_evaluate(TrainConfig(**SMALL), str(workdir), data_dir=small_data_dir,
                               allow_download=False, log=lambda line: None)
    return workdir


@pytest.fixture(scope="module")
def splits(small_data_dir):
    return pipeline.load_splits(small_data_dir, 0)


@pytest.fixture(scope="module")
def exports(trained, small_data_dir, tmp_path_factory):
    """Every --quantize mode exported once, in-process; int8's calibration images recorded."""
    root = tmp_path_factory.mktemp("exports")
    calibrations = []
    real_convert = tflite.convert

    def recording_convert(model, quantize, calibration_images=None):
        calibrations.append(calibration_images)
        return real_convert(model, quantize, calibration_images)

    exported = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tflite, "convert", recording_convert)
        for mode in QUANTIZE:
            exported[mode] = tflite.export_tflite(
                str(trained), str(root / mode), mode, data_dir=small_data_dir,
                allow_download=False, log=lambda line: None)
    return exported, dict(zip(QUANTIZE, calibrations))


def checkpoint_probabilities(workdir, images):
    """The package's own float32 probabilities for uint8 images [N, 28, 28, 1]."""
    loaded = inference.load_model(str(workdir))
    predict = inference.make_predict_fn(loaded.model)
    return predict(images.reshape(len(images), -1).astype(np.float32) / 255.0).numpy()


@pytest.mark.parametrize("mode, tolerance, agreement", [
    ("none", 1e-6, 1.0), ("float16", 2e-2, 0.98), ("dynamic", 0.1, 0.95), ("int8", 0.1, 0.95)])
def test_each_mode_reproduces_the_checkpoint(trained, exports, splits, mode, tolerance,
                                             agreement):
    metadata = exports[0][mode]
    path = metadata["path"]
    assert path == os.path.join(metadata["export_dir"], "model.tflite")
    assert sorted(os.listdir(metadata["export_dir"])) == ["mnist_tf.json", "model.tflite"]
    images = splits.test.images.numpy().reshape(-1, 28, 28, 1)
    expected = checkpoint_probabilities(trained, images)
    _, got = tflite.run(tflite.make_interpreter(path=path), images[..., 0])
    assert got.shape == expected.shape == (200, 10)
    np.testing.assert_allclose(got, expected, atol=tolerance, rtol=0)
    same = np.mean(got.argmax(axis=1) == expected.argmax(axis=1))
    assert same >= agreement
    check = metadata["verification"]
    assert check["num_examples"] == 200 and check["split"] == "test"
    assert check["agreement"] == pytest.approx(same)
    labels = splits.test.labels.numpy()
    assert check["tflite_accuracy"] == pytest.approx(np.mean(got.argmax(axis=1) == labels))
    assert check["checkpoint_accuracy"] == pytest.approx(
        np.mean(expected.argmax(axis=1) == labels))


def test_quantized_files_are_smaller(exports):
    size = {mode: metadata["size_bytes"] for mode, metadata in exports[0].items()}
    assert size == {mode: os.path.getsize(m["path"]) for mode, m in exports[0].items()}
    assert size["float16"] < 0.6 * size["none"]
    assert size["dynamic"] < 0.5 * size["none"] and size["int8"] < 0.5 * size["none"]


def test_int8_takes_pixels_and_gives_quantized_probabilities(exports):
    exported = exports[0]
    for mode in QUANTIZE:
        assert exported[mode]["input"] == {"dtype": "uint8", "shape": [-1, 28, 28]}
    assert exported["none"]["output"] == {"dtype": "float32", "shape": [-1, 10]}
    # Softmax's int8 output: 256 steps over [0, 1).
    assert exported["int8"]["output"] == {"dtype": "int8", "shape": [-1, 10],
                                          "scale": 1 / 256, "zero_point": -128}


def test_int8_is_calibrated_on_the_first_training_images_only(exports, splits):
    exported, calibrations = exports
    assert [mode for mode, images in calibrations.items() if images is not None] == ["int8"]
    used = calibrations["int8"]
    assert exported["int8"]["calibration_images"] == len(used) == tflite.CALIBRATION_IMAGES
    train = splits.train.images.numpy().reshape(-1, 28, 28)
    np.testing.assert_array_equal(used, train[:len(used)])
    test = {image.tobytes() for image in splits.test.images.numpy().reshape(-1, 28, 28)}
    assert not any(image.tobytes() in test for image in used)
    text = tflite.format_tflite_export(exported["int8"])
    assert "Calibrated on 500 training images" in text
    assert "Output: int8 [-1, 10], scale 0.00390625, zero point -128" in text
    assert "Verified with LiteRT on the 200 test images" in text


def test_an_interrupted_export_leaves_nothing_that_looks_complete(trained, splits, tmp_path,
                                                                  monkeypatch):
    export_dir = tmp_path / "model"

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(tflite, "verify", interrupted)
    loaded = inference.load_model(str(trained))
    with pytest.raises(KeyboardInterrupt):
        tflite.export_loaded_tflite(loaded, str(trained), str(export_dir), "none", splits)
    assert os.listdir(tmp_path) == []


def test_a_killed_exports_partial_file_is_refused_then_removed(trained, splits, tmp_path):
    # What an export killed outright leaves: its hidden sibling, with a whole
    # model.tflite in it, named for a process that is gone.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    export_dir = tmp_path / "model"
    partial = tmp_path / (f".model.partial-{os.uname().nodename}-{dead.pid}-" + "0" * 32)
    partial.mkdir()
    (partial / "model.tflite").write_bytes(b"\0" * 64)
    with pytest.raises(UserError, match="unfinished export"):
        tflite.resolve_tflite_path(str(partial))
    loaded = inference.load_model(str(trained))
    tflite.export_loaded_tflite(loaded, str(trained), str(export_dir), "none", splits)
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_evaluate_reports_what_the_export_verified(exports, splits):
    for mode in ("none", "int8"):
        metadata = exports[0][mode]
        results = tflite.evaluate_tflite(metadata["export_dir"], splits=splits)
        assert results["accuracy"] == metadata["verification"]["tflite_accuracy"]
        assert np.sum(results["confusion_matrix"]) == 200 and results["quantize"] == mode
        assert (results["loss"] is None) == (mode == "int8")
    assert np.isfinite(tflite.evaluate_tflite(exports[0]["none"]["path"], splits=splits)["loss"])


def test_evaluate_tflite_on_the_command_line(exports, small_data_dir):
    metadata = exports[0]["int8"]
    result = run_module("mnist_tf.evaluate", f"--tflite={metadata['export_dir']}",
                        f"--data_dir={small_data_dir}", "--nodownload")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # No deprecation or delegate notices.
    correct = round(metadata["verification"]["tflite_accuracy"] * 200)
    assert f"accuracy {correct / 200:.2%} ({correct}/200 correct)" in result.stdout
    assert "output int8, scale 0.00390625, zero point -128" in result.stdout
    assert "Confusion matrix" in result.stdout


@pytest.mark.parametrize("module, args, fragments", [
    ("mnist_tf.export", ["--workdir=w", "--export_dir=e", "--quantize=int8"],
     ["--quantize=int8", "--format=tflite"]),
    ("mnist_tf.export", ["--workdir=w", "--export_dir=e", "--format=tflite", "--quantize=int4"],
     ["--quantize", "int4"]),
    ("mnist_tf.evaluate", ["--workdir=w", "--tflite=m.tflite"], ["--tflite", "not both"]),
    ("mnist_tf.evaluate", ["--tflite=no/such/model.tflite"], ["--tflite", "does not exist"]),
])
def test_bad_flag_combinations_exit_2_with_one_line(module, args, fragments, tmp_path):
    assert_usage_error(run_module(module, *args, cwd=tmp_path), *fragments)


def test_int8_of_a_deskew_model_keeps_the_deskew_float(small_data_dir, splits, tmp_path):
    # Full-integer deskewing resamples at quantized coordinates, the wrong
    # pixels; the export keeps that stage float and still agrees.
    workdir = tmp_path / "run"
    trainer.train_and_evaluate(TrainConfig(**{**SMALL, "deskew": True}), str(workdir),
                               splits=splits, log=lambda line: None)
    metadata = tflite.export_tflite(str(workdir), str(tmp_path / "int8"), "int8", splits=splits)
    assert metadata["integer_only"] is False
    assert metadata["output"] == {"dtype": "float32", "shape": [-1, 10]}
    assert metadata["size_bytes"] < 0.5 * len(tflite.convert(
        inference.load_model(str(workdir)).model, "none"))
    assert metadata["verification"]["agreement"] >= 0.95
    assert "stay float32" in tflite.format_tflite_export(metadata)
