"""Shared fixtures: small datasets the tests write themselves (no network)."""

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def synthetic_digits(num_examples: int, seed: int = 0):
    """Learnable fake digits: class k lights a 7x7 block at a class-specific spot, plus noise.

    Returns uint8 images [N, 28, 28, 1] and int64 labels [N].
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=num_examples)
    images = rng.integers(0, 60, size=(num_examples, 28, 28), dtype=np.int64)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 5)
        r, c = 3 + row * 12, 1 + col * 5
        images[i, r:r + 7, c:c + 5] = rng.integers(180, 256, size=(7, 5))
    return images.astype(np.uint8)[..., None], labels.astype(np.int64)


def mirror_pickle_bytes(sizes=(60, 20, 30), seed=0) -> bytes:
    """A gzipped pickle in the registry mirror's format: float32 pixels k/256."""
    parts = []
    for i, size in enumerate(sizes):
        images, labels = synthetic_digits(size, seed=seed + i)
        pixels = images.reshape(size, 784).astype(np.float32) / 256.0
        parts.append((pixels, labels))
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as f:
        pickle.dump(tuple(parts), f, protocol=2)
    return buffer.getvalue()


def snapshot(root) -> dict:
    """The bytes of every file under `root`, by path relative to it."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_module(module, *args, cwd=None, timeout=240):
    """Runs `python -m module args` as a user would (TF's start-up noise filtered)."""
    env = dict(os.environ)
    env.pop("MNIST_TF_VERBOSE", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


def assert_usage_error(result, *fragments):
    """Exit status 2, exactly one stderr line containing every fragment, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory):
    """A TFDS data dir holding a small prepared `mnist/3.0.1` of synthetic digits.

    600 train and 200 test examples, written through the same TFDS builder the
    registry mirror uses.
    """
    from mnist_tf.data import mirror

    data_dir = tmp_path_factory.mktemp("tfds")
    train = synthetic_digits(600, seed=1)
    test = synthetic_digits(200, seed=2)
    mirror.write_tfds_dataset({"train": train, "test": test}, data_dir)
    return str(data_dir)


@pytest.fixture(scope="module")
def real_data(tmp_path_factory):
    """(data_dir, fresh): where the real MNIST is, for tests marked `real_data`.

    The TFDS data dir ($TFDS_DATA_DIR or TFDS's default) when it already holds
    a prepared copy; otherwise, or with MNIST_TF_TEST_FRESH_DATA=1, an empty
    directory (fresh=True) that the test's first run prepares through the real
    data path, the registry mirror, exactly as a new machine does. Per module,
    so each file's first run sees the empty directory and takes that path.
    """
    from mnist_tf.data import sources

    data_dir = sources.default_data_dir()
    fresh = os.environ.get("MNIST_TF_TEST_FRESH_DATA") == "1" or not sources.is_prepared(data_dir)
    if fresh:
        data_dir = str(tmp_path_factory.mktemp("tfds"))
    return data_dir, fresh


# The test files with the most work (mostly `python -m mnist_tf.*` subprocesses,
# each paying TensorFlow's ~6 s start-up), heaviest first: every file measured
# above ~10 CPU seconds, in the order of its CPU time (user + system, its
# subprocesses included; 2026-11-26: from ~95 s for test_benchmarks.py down to
# ~10 s). pytest-xdist's two processes take whole files in collection order
# (`--dist loadfile --no-loadscope-reorder` in pyproject.toml), each taking the
# next file as its current one nears its end; longest first (and the many small
# files last) lets both finish together instead of one waiting on a long file
# picked last. Files not listed follow in collection order. Only the order
# depends on this list, never a result.
HEAVY_FIRST = ("test_benchmarks.py", "test_trainer.py", "test_preemption.py",
               "test_bad_inputs.py", "test_distribute.py", "test_crash_safety.py",
               "test_divergence.py", "test_export.py", "test_predict.py", "test_real_data.py",
               "test_cli.py", "test_evaluate.py", "test_readme.py",
               "test_real_data_averaging.py", "test_step_profile.py", "test_data.py",
               "test_ema_training.py", "test_augment_cost.py", "test_workdir.py",
               "test_tensorboard.py", "test_precision.py", "test_api.py", "test_pictures.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(HEAVY_FIRST)))  # Stable.
