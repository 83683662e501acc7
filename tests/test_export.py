"""`mnist_tf.export`: a SavedModel that TensorFlow alone can serve, written atomically."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_usage_error, run_module

from mnist_tf import export, inference
from mnist_tf.config import TrainConfig
from mnist_tf.data import sources
from mnist_tf.errors import CheckpointError, UserError
from mnist_tf.training import trainer

REPO = Path(__file__).resolve().parents[1]
# Without XLA (the default): these tests need the arithmetic, and compiling would
# double their time; the XLA path has tests of its own.
SMALL = dict(jit_compile=False,
             hidden_sizes=(32,), batch_size=32, train_steps=30, validation_size=0,
             learning_rate=3e-3, log_every_steps=10, checkpoint_every_steps=10,
             eval_batch_size=64)

# Runs in a fresh interpreter where `import mnist_tf` fails, so the SavedModel
# must stand on its own. argv: export_dir, images.npy, outputs.npz.
STANDALONE_SERVE = """
import sys
sys.modules["mnist_tf"] = None
try:
    import mnist_tf  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("mnist_tf is importable; the test would prove nothing")
import numpy as np
import tensorflow as tf

images = np.load(sys.argv[2])
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
with_channel = serve(images=tf.constant(images))
without_channel = serve(images=tf.constant(images[..., 0]))
np.savez(sys.argv[3],
         probabilities=with_channel["probabilities"].numpy(),
         classes=with_channel["classes"].numpy(),
         probabilities_hw=without_channel["probabilities"].numpy(),
         classes_hw=without_channel["classes"].numpy())
"""


def uint8_test_images(data_dir: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` test images as TFDS stores them: uint8 [N, 28, 28, 1], and labels."""
    import tensorflow_datasets as tfds

    dataset = tfds.builder("mnist", data_dir=data_dir).as_dataset(
        split=f"test[:{count}]", as_supervised=True, shuffle_files=False)
    images, labels = next(iter(dataset.batch(count)))
    return images.numpy(), labels.numpy()


def serve_standalone(export_dir, images: np.ndarray, tmp_path: Path) -> dict[str, np.ndarray]:
    """Serves `images` with the SavedModel in a subprocess that cannot import mnist_tf."""
    np.save(tmp_path / "images.npy", images)
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = subprocess.run(
        [sys.executable, "-c", STANDALONE_SERVE, str(export_dir), str(tmp_path / "images.npy"),
         str(tmp_path / "outputs.npz")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(tmp_path / "outputs.npz") as outputs:
        return dict(outputs)


def in_process_probabilities(workdir, images: np.ndarray, checkpoint=None) -> np.ndarray:
    """What the package itself predicts for uint8 images, normalised as in training."""
    loaded = inference.load_model(str(workdir), checkpoint)
    predict = inference.make_predict_fn(loaded.model)
    return predict(images.reshape(len(images), 784).astype(np.float32) / 255.0).numpy()


def assert_same_predictions(served: dict[str, np.ndarray], expected: np.ndarray):
    for suffix in ("", "_hw"):
        probabilities = served["probabilities" + suffix]
        classes = served["classes" + suffix]
        assert probabilities.dtype == np.float32 and probabilities.shape == expected.shape
        assert classes.dtype == np.int64 and classes.shape == (len(expected),)
        np.testing.assert_allclose(probabilities, expected, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(classes, expected.argmax(axis=1))


def export_cli(*args, timeout=120):
    return run_module("mnist_tf.export", *args, timeout=timeout)



def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def partial_exports(parent: Path) -> list[str]:
    return [name for name in os.listdir(parent) if ".partial-" in name]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_data_dir):
    """A workdir trained once for this file (checkpoints at steps 10, 20, 30)."""
    workdir = tmp_path_factory.mktemp("run")
    trainer.train_and_evaluate(TrainConfig(**SMALL), str(workdir), data_dir=small_data_dir,
                               allow_download=False, log=lambda line: None)
    return workdir


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The trained workdir exported once, in-process."""
    export_dir = tmp_path_factory.mktemp("exports") / "model"
    metadata = export.export_model(str(trained), str(export_dir))
    return export_dir, metadata


def test_saved_model_serves_without_this_package(trained, exported, small_data_dir, tmp_path):
    export_dir, _ = exported
    images, _ = uint8_test_images(small_data_dir, 200)
    assert images.dtype == np.uint8 and images.shape == (200, 28, 28, 1)
    served = serve_standalone(export_dir, images, tmp_path)
    assert_same_predictions(served, in_process_probabilities(trained, images))


def test_export_records_its_source(trained, exported):
    export_dir, metadata = exported
    assert sorted(os.listdir(export_dir)) == [
        "assets", "assets.extra", "fingerprint.pb", "saved_model.pb", "variables"]
    assert json.loads((export_dir / "assets.extra" / "mnist_tf.json").read_text()) == metadata
    assert metadata["checkpoint"] == str(trained / "checkpoints" / "ckpt-30")
    assert metadata["step"] == 30 and metadata["hidden_sizes"] == [32]
    assert metadata["signature"]["name"] == "serving_default"
    assert partial_exports(export_dir.parent) == []


def test_signature_rejects_other_shapes_and_dtypes(exported):
    import tensorflow as tf

    served = tf.saved_model.load(str(exported[0]))
    signature = served.signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    assert list(inputs) == ["images"] and inputs["images"].dtype == tf.uint8
    assert set(signature.structured_outputs) == {"probabilities", "classes"}
    for shape in ([2, 784], [2, 28, 28, 3], [28, 28], [1, 2, 28, 28, 1], [2, 14, 56]):
        with pytest.raises(tf.errors.InvalidArgumentError, match="images must be uint8"):
            signature(images=tf.zeros(shape, tf.uint8))
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        signature(images=tf.zeros([2, 28, 28, 1], tf.float32))
    empty = signature(images=tf.zeros([0, 28, 28, 1], tf.uint8))
    assert empty["probabilities"].shape == (0, 10)
    # The restored tf.function works too, positionally.
    assert served.serve(tf.zeros([3, 28, 28], tf.uint8))["classes"].shape == (3,)


def test_named_checkpoint_into_an_empty_existing_directory(trained, tmp_path):
    import tensorflow as tf

    export_dir = tmp_path / "empty"
    export_dir.mkdir()
    older = str(trained / "checkpoints" / "ckpt-10")
    metadata = export.export_model(str(trained), str(export_dir), checkpoint=older)
    assert metadata["step"] == 10
    images = (np.arange(3 * 784) % 256).astype(np.uint8).reshape(3, 28, 28, 1)
    served = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    np.testing.assert_allclose(served(images=tf.constant(images))["probabilities"].numpy(),
                               in_process_probabilities(trained, images, checkpoint=older),
                               atol=1e-5, rtol=0)


def test_refuses_a_non_empty_directory_or_a_file(trained, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("precious")
    with pytest.raises(UserError, match=f"--export_dir: {occupied} already exists and is not"):
        export.export_model(str(trained), str(occupied))
    assert snapshot(occupied) == {"keep.txt": b"precious"}

    a_file = tmp_path / "file"
    a_file.write_text("precious")
    with pytest.raises(UserError, match=f"--export_dir: {a_file} is a file"):
        export.export_model(str(trained), str(a_file))
    assert a_file.read_text() == "precious"
    assert partial_exports(tmp_path) == []


def test_checkpoint_problems_export_nothing(trained, tmp_path):
    missing = str(tmp_path / "nowhere" / "ckpt-3")
    with pytest.raises(CheckpointError, match=f"--checkpoint: {missing}"):
        export.export_model(str(trained), str(tmp_path / "out" / "model"), checkpoint=missing)
    assert not (tmp_path / "out").exists()


def test_a_crash_mid_export_leaves_no_directory(trained, tmp_path, monkeypatch):
    import tensorflow as tf

    real_save = tf.saved_model.save

    def save_then_crash(module, directory, **kwargs):
        real_save(module, directory, **kwargs)  # Half the work done, files on disk...
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(tf.saved_model, "save", save_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        export.export_model(str(trained), str(tmp_path / "model"))
    assert os.listdir(tmp_path) == []


def test_command_line_exports_then_refuses_to_overwrite(trained, tmp_path):
    export_dir = tmp_path / "model"
    first = export_cli(f"--workdir={trained}", f"--export_dir={export_dir}")
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    lines = first.stdout.strip().splitlines()
    assert lines[0] == (f"Exported {trained / 'checkpoints' / 'ckpt-30'} (step 30, hidden "
                        f"sizes [32], trained weights) to {export_dir}")
    assert lines[1].startswith("Signature serving_default: images uint8 [N, 28, 28, 1] or "
                               "[N, 28, 28] -> probabilities float32 [N, 10], classes int64")
    assert (export_dir / "saved_model.pb").is_file()

    before = snapshot(export_dir)
    again = export_cli(f"--workdir={trained}", f"--export_dir={export_dir}")
    assert_usage_error(again, "--export_dir", str(export_dir), "not empty")
    assert snapshot(export_dir) == before
    assert partial_exports(tmp_path) == []


@pytest.mark.parametrize("args, fragments", [
    (["--workdir={workdir}"], ["--export_dir", "must have a value"]),
    (["--workdir={workdir}", "--export_dir="], ["--export_dir", "must not be empty"]),
])
def test_command_line_bad_inputs_exit_2(args, fragments, trained, tmp_path):
    before = snapshot(trained)
    result = export_cli(*(arg.format(workdir=trained, tmp=tmp_path) for arg in args))
    assert_usage_error(result, *fragments)
    assert snapshot(trained) == before
    assert os.listdir(tmp_path) == []


@pytest.mark.real_data
def test_export_of_a_model_trained_on_real_mnist(tmp_path, real_data):
    data_dir, fresh = real_data
    workdir = tmp_path / "run"
    # Without XLA: the export is tested, not the compiler.
    config = TrainConfig(hidden_sizes=(128,), batch_size=128, train_steps=100,
                         validation_size=0, log_every_steps=100, jit_compile=False)
    results = trainer.train_and_evaluate(config, str(workdir), data_dir=data_dir,
                                         allow_download=False, log=lambda line: None)
    # No prepared copy: this run prepared one from the registry mirror.
    assert results["data_source"] == ("mirror" if fresh else "prepared")
    assert sources.is_prepared(data_dir)
    assert results["test_accuracy"] > 0.85, results
    export.export_model(str(workdir), str(tmp_path / "model"))

    images, labels = uint8_test_images(data_dir, 200)
    served = serve_standalone(tmp_path / "model", images, tmp_path)
    assert_same_predictions(served, in_process_probabilities(workdir, images))
    assert (served["classes"] == labels).mean() > 0.85
