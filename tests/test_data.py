import os
import shutil

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
    # Held as uint8 pixels (a quarter of float32's memory); the steps normalise.
    assert images.shape == (500, 784) and images.dtype == np.uint8
    assert labels.dtype == np.int32
    assert images.max() > 180  # The synthetic digits' bright blocks, not rescaled.


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
        np.testing.assert_array_equal(images, np.stack([x.reshape(784) for x, _ in expected]))
        np.testing.assert_array_equal(labels, [y for _, y in expected])


@pytest.fixture(scope="module")
def tfds_decoded(small_data_dir):
    """What TFDS decodes from `small_data_dir`, example by example: {split: (images, labels)}."""
    builder = tfds.builder("mnist", data_dir=small_data_dir)
    decoded = {}
    for split in ("train", "test"):
        pairs = [(x.numpy(), int(y)) for x, y in builder.as_dataset(
            split=split, as_supervised=True, shuffle_files=False)]
        decoded[split] = (np.stack([x for x, _ in pairs]),
                          np.array([y for _, y in pairs], dtype=np.int64))
    return decoded


@pytest.fixture
def data_copy(small_data_dir, tmp_path):
    """A copy of `small_data_dir` without its decoded cache, to damage at will."""
    copy = tmp_path / "tfds"
    shutil.copytree(small_data_dir, copy,
                    ignore=shutil.ignore_patterns(pipeline.DECODED_CACHE_DIR))
    return copy


@pytest.fixture
def decodes(monkeypatch, tfds_decoded):
    """The splits TFDS is asked to decode from now on (a spy on `as_dataset`)."""
    calls = []
    as_dataset = tfds.core.DatasetBuilder.as_dataset

    def spy(self, *args, **kwargs):
        calls.append(kwargs["split"])
        return as_dataset(self, *args, **kwargs)

    monkeypatch.setattr(tfds.core.DatasetBuilder, "as_dataset", spy)
    return calls


def decoded_arrays(data_dir):
    return pipeline.decoded_arrays(tfds.builder("mnist", data_dir=str(data_dir)))


def assert_same_arrays(arrays, expected):
    assert arrays.keys() == expected.keys() == {"train", "test"}
    for split, (images, labels) in arrays.items():
        assert images.dtype == np.uint8 and labels.dtype == np.int64
        assert images.shape == (len(labels), 28, 28, 1)
        np.testing.assert_array_equal(images, expected[split][0])
        np.testing.assert_array_equal(labels, expected[split][1])


def the_cache(data_dir):
    """The one entry of the decoded-cache directory."""
    (name,) = os.listdir(data_dir / pipeline.DECODED_CACHE_DIR)
    return data_dir / pipeline.DECODED_CACHE_DIR / name


def test_decoded_cache_is_a_dataset_save_reused_without_decoding(data_copy, decodes,
                                                                 tfds_decoded):
    assert_same_arrays(decoded_arrays(data_copy), tfds_decoded)
    assert decodes == ["train", "test"]
    cache = the_cache(data_copy)
    assert cache.name.startswith("mnist-3.0.1-")
    assert sorted(os.listdir(cache)) == ["sizes.json", "snapshot_metadata.sha256", "test",
                                         "train"]
    # Each split is a tf.data save of one element, the whole split.
    images, labels = tf.data.Dataset.load(str(cache / "test")).get_single_element()
    np.testing.assert_array_equal(images.numpy(), tfds_decoded["test"][0])
    np.testing.assert_array_equal(labels.numpy(), tfds_decoded["test"][1])
    # TFDS still sees only its own dataset beside the cache.
    assert tfds.builder("mnist", data_dir=str(data_copy)).info.splits["test"].num_examples == 200

    assert_same_arrays(decoded_arrays(data_copy), tfds_decoded)
    assert decodes == ["train", "test"]  # Not decoded again.
    assert the_cache(data_copy) == cache


def test_stale_decoded_cache_is_rebuilt_and_old_caches_removed(data_copy, decodes,
                                                               tfds_decoded):
    decoded_arrays(data_copy)
    old = the_cache(data_copy)
    # The previous implementation's .npz, and a save killed before its rename.
    (old.parent / "mnist-3.0.1-0123456789abcdef.npz").write_bytes(b"an old cache")
    shutil.copytree(old, old.parent / f".{old.name}.0f0f", ignore=shutil.ignore_patterns("test"))

    # Re-preparing the data (new file times) gives a new fingerprint.
    tfds_dir = data_copy / "mnist" / "3.0.1"
    for name in os.listdir(tfds_dir):
        os.utime(tfds_dir / name, ns=(1, 1))
    assert_same_arrays(decoded_arrays(data_copy), tfds_decoded)
    assert decodes == ["train", "test"] * 2
    new = the_cache(data_copy)  # The only entry left.
    assert new.name != old.name and new.name.startswith("mnist-3.0.1-")


def snapshot_file(cache, split, suffix):
    (path,) = (cache / split).glob(f"**/*{suffix}")
    return path


def set_metadata_version(cache, split, version):
    from tensorflow.core.protobuf import snapshot_pb2

    path = cache / split / "snapshot.metadata"
    metadata = snapshot_pb2.SnapshotMetadataRecord.FromString(path.read_bytes())
    metadata.version = version
    path.write_bytes(metadata.SerializeToString())


def overwrite(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


DAMAGES = {
    "shard truncated": lambda cache: os.truncate(
        snapshot_file(cache, "train", ".snapshot"), 10_000),
    "shard cut to its header": lambda cache: os.truncate(
        snapshot_file(cache, "train", ".snapshot"), 10),
    "shard emptied": lambda cache: os.truncate(snapshot_file(cache, "test", ".snapshot"), 0),
    "shard overwritten": lambda cache: overwrite(
        snapshot_file(cache, "train", ".snapshot"), 1000, b"\xff" * 40),
    "shard deleted": lambda cache: os.remove(snapshot_file(cache, "test", ".snapshot")),
    "split deleted": lambda cache: shutil.rmtree(cache / "test"),
    "metadata emptied": lambda cache: (cache / "test" / "snapshot.metadata").write_bytes(b""),
    # Dataset.load crashes the process on this one (SIGSEGV, TF 2.21) unless
    # the digest check stops it first.
    "metadata format version 0": lambda cache: set_metadata_version(cache, "test", 0),
    "digest deleted": lambda cache: os.remove(cache / "snapshot_metadata.sha256"),
    "sizes deleted": lambda cache: os.remove(cache / "sizes.json"),
    "sizes changed": lambda cache: (cache / "sizes.json").write_text('{"train": 1, "test": 1}'),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_decoded_cache_is_rebuilt(data_copy, decodes, tfds_decoded, damage):
    decoded_arrays(data_copy)
    cache = the_cache(data_copy)
    DAMAGES[damage](cache)

    assert_same_arrays(decoded_arrays(data_copy), tfds_decoded)
    assert decodes == ["train", "test"] * 2
    assert the_cache(data_copy) == cache  # Saved again under its name...
    assert_same_arrays(decoded_arrays(data_copy), tfds_decoded)
    assert decodes == ["train", "test"] * 2  # ... and intact.


def test_load_splits_reads_an_intact_cache_without_tfds(data_copy, monkeypatch, tfds_decoded):
    expected = pipeline.load_splits(str(data_copy), 30)  # Decodes through TFDS, saves the cache.

    def no_tfds(*args, **kwargs):
        raise AssertionError("TFDS's builder was built")

    monkeypatch.setattr(tfds, "builder", no_tfds)
    splits = pipeline.load_splits(str(data_copy), 30)
    assert (splits.num_train, splits.num_validation, splits.num_test) == (
        expected.num_train, 30, expected.num_test)
    for name in ("train", "validation", "test"):
        for got, want in zip(as_arrays(getattr(splits, name)), as_arrays(getattr(expected, name))):
            np.testing.assert_array_equal(got, want)
    with pytest.raises(UserError, match="--validation_size: .* leaves no training examples"):
        pipeline.load_splits(str(data_copy), len(tfds_decoded["train"][1]))
    # Re-prepared files (another fingerprint) go through TFDS again.
    tfds_dir = data_copy / "mnist" / "3.0.1"
    os.utime(tfds_dir / "dataset_info.json", ns=(1, 1))
    with pytest.raises(DataError, match="builder was built"):
        pipeline.load_splits(str(data_copy), 30)


def files_in(data_dir):
    """{relative path: contents} of every file under `data_dir`, hidden ones too."""
    return {str(path.relative_to(data_dir)): path.read_bytes()
            for path in data_dir.rglob("*") if path.is_file()}


def make_cache_dir_a_file(data_dir, monkeypatch):
    (data_dir / pipeline.DECODED_CACHE_DIR).write_text("someone's file")


def fail_saves_half_way(data_dir, monkeypatch):
    # What a full or read-only disk does: the save starts, then fails.
    save = tf.data.Dataset.save

    def half_a_save(self, path, *args, **kwargs):
        save(self.take(0), path)
        raise tf.errors.PermissionDeniedError(None, None, f"{path}: Permission denied")

    monkeypatch.setattr(tf.data.Dataset, "save", half_a_save)


@pytest.mark.parametrize("unwritable", [make_cache_dir_a_file, fail_saves_half_way])
def test_unwritable_data_dir_decodes_every_time_and_leaves_nothing(
        data_copy, decodes, tfds_decoded, monkeypatch, unwritable):
    # Tests run as root, which chmod cannot stop, so a data dir that cannot be
    # written is simulated: a file where the cache directory goes, or saves
    # that fail half-way.
    unwritable(data_copy, monkeypatch)
    before = files_in(data_copy)
    for calls in (1, 2):
        assert_same_arrays(decoded_arrays(data_copy), tfds_decoded)
        assert decodes == ["train", "test"] * calls
        assert files_in(data_copy) == before


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


def test_train_chunks_index_the_same_batches_as_train_batches(splits):
    # The default runner gathers each call's batches by these indices: they
    # must be train_batches' batches, in order, from a resumed offset too,
    # padded with the chunk's first batch.
    batches = [images.numpy() for images, _ in
               pipeline.train_batches(splits.train, 50, seed=3, epoch=2, skip_batches=1)]
    chunks = list(pipeline.train_chunks(len(splits.train), 50, seed=3, epoch=2,
                                        counts=[3, 2, 1], chunk_size=3, skip_batches=1))
    images = splits.train.images.numpy()
    assert [int(count) for _, count in chunks] == [3, 2, 1]
    got = [images[index.numpy()[i]] for index, count in chunks for i in range(int(count))]
    np.testing.assert_array_equal(np.stack(got), np.stack(batches[:6]))
    index, _ = chunks[1]
    np.testing.assert_array_equal(index.numpy()[2], index.numpy()[0])
    assert index.shape == (3, 50) and index.dtype == tf.int32


def test_every_pipeline_runs_without_the_autotuner(splits):
    # Deleting an unfinished iterator waits for the autotuner's thread, which
    # sleeps up to a minute (pipeline.gathered): a run stopped mid-epoch stalled.
    pipelines = {
        "train_batches": pipeline.train_batches(splits.train, 50, seed=0, epoch=0),
        "train_chunks": pipeline.train_chunks(len(splits.train), 50, seed=0, epoch=0,
                                              counts=[4, 4], chunk_size=4),
        "eval_batches": pipeline.eval_batches(splits.test, 64),
        "for_distribution": pipeline.for_distribution(
            pipeline.train_batches(splits.train, 50, seed=0, epoch=0)),
    }
    for name, dataset in pipelines.items():
        assert dataset.options().autotune.enabled is False, name
        iterator = iter(dataset)
        next(iterator)  # Started and left unfinished, as a stopped run leaves it.
        del iterator
