import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import synthetic_digits

from mnist_tf.data import mirror, pipeline
from mnist_tf.errors import DataError, UserError


@pytest.fixture(scope="module")
def splits(small_data_dir):
    return pipeline.load_splits(small_data_dir, validation_size=100)


def as_arrays(examples):
    return examples.images.numpy(), examples.labels.numpy()


def test_split_sizes_and_element_format(splits):
    assert (splits.num_train, splits.num_validation, splits.num_test) == (500, 100, 200)
    images, labels = as_arrays(splits.train)
    assert images.shape == (500, 784) and images.dtype == np.float32
    assert labels.dtype == np.int32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.max() > 0.7  # Scaled by 1/255, not left as 0..255 or crushed.


def test_splits_are_tfds_records_in_tfds_order(small_data_dir):
    # The cache must hold exactly what TFDS decodes, in the same order, so the
    # validation split (the last records) is the same with or without it.
    builder = tfds.builder("mnist", data_dir=small_data_dir)
    for split, name in (("train[:500]", "train"), ("train[500:]", "validation"),
                        ("test", "test")):
        expected = [(x.numpy(), int(y)) for x, y in builder.as_dataset(
            split=split, as_supervised=True, shuffle_files=False)]
        examples = getattr(pipeline.load_splits(small_data_dir, 100), name)
        images, labels = as_arrays(examples)
        np.testing.assert_array_equal(
            images, np.stack([x.reshape(784) for x, _ in expected]).astype(np.float32) / 255.0)
        np.testing.assert_array_equal(labels, [y for _, y in expected])


def test_decoded_cache_is_written_reused_and_rebuilt_when_stale(tmp_path, monkeypatch):
    train, test = synthetic_digits(60, seed=3), synthetic_digits(20, seed=4)
    mirror.write_tfds_dataset({"train": train, "test": test}, tmp_path)
    cache_dir = tmp_path / pipeline.DECODED_CACHE_DIR
    first = as_arrays(pipeline.load_splits(str(tmp_path), 0).train)
    (cached,) = os.listdir(cache_dir)

    # Reused: TFDS is not asked to decode again.
    builder = tfds.builder("mnist", data_dir=str(tmp_path))
    with monkeypatch.context() as patch:
        patch.setattr(tfds.core.DatasetBuilder, "as_dataset",
                      lambda *a, **k: pytest.fail("decoded although the cache is valid"))
        again = as_arrays(pipeline.load_splits(str(tmp_path), 0).train)
    np.testing.assert_array_equal(first[0], again[0])
    assert os.listdir(cache_dir) == [cached]

    # A damaged cache file is ignored and rewritten.
    (cache_dir / cached).write_bytes(b"not a zip file")
    rebuilt = as_arrays(pipeline.load_splits(str(tmp_path), 0).train)
    np.testing.assert_array_equal(first[0], rebuilt[0])
    assert (cache_dir / cached).stat().st_size > 1000

    # Re-preparing the data (new files) makes a new cache and removes the old one.
    for name in os.listdir(builder.data_dir):
        if ".tfrecord" in name:
            path = os.path.join(builder.data_dir, name)
            os.utime(path, ns=(1, 1))
    pipeline.load_splits(str(tmp_path), 0)
    (new,) = os.listdir(cache_dir)
    assert new != cached


def test_read_only_data_dir_still_loads(tmp_path):
    mirror.write_tfds_dataset({"train": synthetic_digits(30, seed=5),
                               "test": synthetic_digits(10, seed=6)}, tmp_path)
    os.chmod(tmp_path, 0o555)
    try:
        splits = pipeline.load_splits(str(tmp_path), 0)
    finally:
        os.chmod(tmp_path, 0o755)
    assert splits.num_train == 30 and len(splits.test) == 10
    assert not (tmp_path / pipeline.DECODED_CACHE_DIR).exists() or os.geteuid() == 0


def test_damaged_records_are_a_data_error(tmp_path):
    mirror.write_tfds_dataset({"train": synthetic_digits(30, seed=5),
                               "test": synthetic_digits(10, seed=6)}, tmp_path)
    builder = tfds.builder("mnist", data_dir=str(tmp_path))
    for name in os.listdir(builder.data_dir):
        if ".tfrecord" in name:
            with open(os.path.join(builder.data_dir, name), "r+b") as f:
                f.seek(20)
                f.write(b"\xff" * 40)
    with pytest.raises(DataError, match="cannot read the prepared mnist"):
        pipeline.load_splits(str(tmp_path), 0)


def test_validation_is_carved_from_train_never_from_test(splits, small_data_dir):
    train, _ = as_arrays(splits.train)
    validation, _ = as_arrays(splits.validation)
    test, _ = as_arrays(splits.test)
    assert len(validation) == 100
    rows = {row.tobytes() for row in train}
    assert not any(row.tobytes() in rows for row in validation)
    assert not any(row.tobytes() in rows for row in test)
    full = pipeline.load_splits(small_data_dir, validation_size=0)
    assert full.validation is None and full.num_train == 600
    everything = {row.tobytes() for row in as_arrays(full.train)[0]}
    assert all(row.tobytes() in everything for row in validation)


def test_validation_size_too_large_is_a_user_error(small_data_dir):
    with pytest.raises(UserError, match="--validation_size"):
        pipeline.load_splits(small_data_dir, validation_size=600)


def test_train_batches_have_static_shape_and_drop_the_remainder(splits):
    batches = pipeline.train_batches(splits.train, 64, seed=0, epoch=0)
    assert batches.element_spec[0].shape == (64, 784)
    sizes = [len(y) for _, y in batches]
    assert sizes == [64] * (500 // 64)


def test_each_epoch_has_its_own_reproducible_order(splits):
    def labels(epoch, skip=0):
        batches = pipeline.train_batches(splits.train, 50, seed=0, epoch=epoch, skip_batches=skip)
        return np.concatenate([y.numpy() for _, y in batches])

    epoch0, epoch1 = labels(0), labels(1)
    np.testing.assert_array_equal(epoch0, labels(0))
    assert not np.array_equal(epoch0, epoch1)
    assert sorted(epoch0) == sorted(epoch1)  # A permutation of the same examples.
    # Resuming after 3 batches yields exactly the rest of that epoch.
    np.testing.assert_array_equal(labels(1, skip=3), epoch1[150:])
    # The order is epoch_order's, which the --data_on_device loop also uses.
    order = pipeline.epoch_order(500, 0, 1).numpy()[:500]
    np.testing.assert_array_equal(epoch1, splits.train.labels.numpy()[order])


def test_eval_batches_pad_the_last_batch_and_mask_it(splits):
    batches = list(pipeline.eval_batches(splits.test, 64))
    assert len(batches) == 4  # 200 = 3 * 64 + 8
    for images, labels, mask in batches:
        assert images.shape == (64, 784) and labels.shape == (64,) and mask.shape == (64,)
    assert sum(int(tf.reduce_sum(tf.cast(m, tf.int32))) for _, _, m in batches) == 200
    last_images, _, last_mask = batches[-1]
    assert last_mask.numpy().tolist() == [True] * 8 + [False] * 56
    assert float(tf.reduce_sum(last_images[8:])) == 0.0
    # In split order: the batches put back together are the split.
    images = np.concatenate([x.numpy() for x, _, _ in batches])[:200]
    np.testing.assert_array_equal(images, splits.test.images.numpy())
