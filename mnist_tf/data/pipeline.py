"""The input pipeline: TFDS `mnist` -> decoded once -> uint8 tensors -> batches by index.

Splits: `train` and `validation` are carved from TFDS's train split (the last
`validation_size` examples are validation; the test split is never touched
for model selection), `test` is TFDS's test split.

TFDS stores MNIST as PNGs, and decoding all 70,000 costs seconds every run,
so the decoded uint8 arrays are saved once with `tf.data`'s own
`Dataset.save` beside the prepared data (`DECODED_CACHE_DIR`; see "The decoded
cache" below). Every split is held in memory as uint8 tensors (55 MB; the
traced steps normalise each batch), and batches are gathered from those
tensors by index: by tf.data (`train_batches`, `eval_batches`), or inside the
compiled training loop, which tf.data feeds only the indices (`train_chunks`).

Batches have static shapes so each traced step is traced once:

* training drops the last partial batch of each epoch; since every epoch is
  reshuffled, a different handful of examples sits out each epoch;
* evaluation pads the last batch to full size and returns a mask, so every
  example is counted exactly once.

The training order of epoch `e` is `epoch_order(n, seed, e)`, a stateless
function of `(seed, e)`: it is what lets a resumed run pick up the data order
where the checkpoint left it, and what makes the tf.data path and the
`--data_on_device` loop train on exactly the same batches.

The decoded cache: `DECODED_CACHE_DIR/mnist-<version>-<fingerprint>/` holds a
`Dataset.save` (uncompressed) of each split as ONE element, the whole uint8
arrays, read back with `Dataset.load(..., element_spec=...)` and
`get_single_element()` (one element loads far faster than 70,000 small ones).
Three hand-written pieces remain:

* the fingerprint of TFDS's files (names, sizes, mtimes; 0.2 ms) in the
  directory name: `Dataset.load` knows nothing of where the data came from, so
  re-preparing the data would otherwise go unnoticed (`Dataset.snapshot` and
  `cache(filename)` key on the pipeline or a file name, not on the files'
  contents either);
* a temporary directory renamed into place: `Dataset.load` reads a half-written
  save without complaint (it ignores the `finalized` and `num_elements` fields
  of its metadata; a shard cut to its header or to nothing, or a missing run
  directory, reads as zero elements), so only a complete save gets the name;
* a sha256 of the splits' `snapshot.metadata` files, checked before loading:
  a damaged metadata file can crash the process (a format version read as 0
  or 1 segfaults TensorFlow), while the shards are checksummed by TensorFlow
  itself (`DataLossError`). It covers `sizes.json` too, each split's number of
  examples, which lets `load_splits` read an intact cache without importing
  TFDS or building its `mnist` builder (a third of a second of every start);
  anything else goes through TFDS, which reports what is wrong with the
  prepared files.

Anything else wrong with a cache (missing, stale, damaged, a shard truncated or
deleted) reads as a miss: the PNGs are decoded and the cache saved again; a
data dir that cannot be written just means decoding every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid

import numpy as np
import tensorflow as tf

from mnist_tf.constants import IMAGE_SIZE, NUM_PIXELS
from mnist_tf.data import mirror, sources
from mnist_tf.errors import DataError, UserError

# Beside the TFDS dataset directories in the data dir; TFDS ignores it.
DECODED_CACHE_DIR = "mnist_tf_decoded"
_DECODED_SPLITS = ("train", "test")
# In a decoded cache: the sha256 of its splits' `snapshot.metadata` files, on
# which `Dataset.load` can crash when they are damaged (see the module docstring),
# and of its `_SIZES` file.
_METADATA_DIGEST = "snapshot_metadata.sha256"
# In a decoded cache: {split: number of examples}, so that it loads without TFDS.
_SIZES = "sizes.json"


@dataclasses.dataclass(frozen=True)
class Examples:
    """A split held as tensors, as compact as the data is.

    Attributes:
        images: uint8 [N, 784] pixels 0..255, flattened; the traced steps
            normalise them (`constants.normalize`), so a split costs 784
            bytes an image instead of 3,136 as float32. (Tests may pass
            float32 [N, 784] already in [0, 1]; the steps take it as it is.)
        labels: int32 [N].
    """

    images: tf.Tensor
    labels: tf.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclasses.dataclass(frozen=True)
class Splits:
    """The three splits, preprocessed and held in memory.

    Attributes:
        train: training examples.
        validation: validation examples, or None when `validation_size` is 0.
        test: the official test set.
        num_train: number of training examples.
        num_validation: number of validation examples.
        num_test: number of test examples.
    """

    train: Examples
    validation: Examples | None
    test: Examples
    num_train: int
    num_validation: int
    num_test: int


def from_arrays(images, labels) -> Examples:
    """Holds uint8 images [N, 28, 28(, 1)] and integer labels [N] as `Examples`.

    Arrays or tensors: a uint8 tensor is reshaped, not copied.
    """
    images = tf.reshape(tf.convert_to_tensor(images, tf.uint8), [-1, NUM_PIXELS])
    return Examples(images, tf.cast(labels, tf.int32))


def _fingerprint(directory: str) -> str:
    """Identifies the prepared files: names, sizes and modification times."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        stat = os.stat(os.path.join(directory, name))
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def _cache_path(dataset_dir: str, version: str) -> str:
    """The decoded cache of the prepared files in `dataset_dir` (DATA_DIR/mnist/VERSION)."""
    return os.path.join(os.path.dirname(os.path.dirname(dataset_dir)), DECODED_CACHE_DIR,
                        f"mnist-{version}-{_fingerprint(dataset_dir)}")


def _metadata_digest(path: str) -> str:
    """The sha256 of the splits' `snapshot.metadata` files and `_SIZES` in the cache at `path`."""
    digest = hashlib.sha256()
    for name in (*(os.path.join(split, "snapshot.metadata") for split in _DECODED_SPLITS),
                 _SIZES):
        with open(os.path.join(path, name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def _load_decoded(path: str, sizes: dict[str, int] | None = None
                  ) -> dict[str, tuple[tf.Tensor, tf.Tensor]] | None:
    """The arrays `_save_decoded` left at `path` as tensors, or None if missing or damaged.

    Tensors, not arrays: `load_splits` holds them as they are, where a round
    trip through NumPy would copy the 55 MB twice.

    Args:
        path: the cache's directory.
        sizes: {split: examples} as TFDS counts them; None: as the cache says
            (it is keyed by the prepared files, so it cannot disagree with
            them unless damaged, and damage reads as a miss).
    """
    try:
        with open(os.path.join(path, _METADATA_DIGEST)) as f:
            if f.read() != _metadata_digest(path):
                return None  # Not safe to hand to Dataset.load.
        with open(os.path.join(path, _SIZES)) as f:
            saved = json.load(f)
        if sizes is not None and saved != sizes:
            return None  # Stale: TFDS counts otherwise.
        sizes, arrays = saved, {}
        for split, size in sizes.items():
            spec = (tf.TensorSpec([size, IMAGE_SIZE, IMAGE_SIZE, 1], tf.uint8),
                    tf.TensorSpec([size], tf.int64))
            # get_single_element checks the element against `spec`, and that there is one.
            images, labels = tf.data.Dataset.load(os.path.join(path, split),
                                                  element_spec=spec).get_single_element()
            arrays[split] = images, labels
        return arrays
    except (OSError, ValueError, tf.errors.OpError):
        # Measured: DataLossError (a shard truncated or overwritten), NotFoundError
        # (a shard deleted), InvalidArgumentError (no element, other shapes).
        return None


def _save_decoded(arrays: dict[str, tuple[np.ndarray, np.ndarray]], path: str) -> None:
    """Saves `arrays` at `path` for `_load_decoded`; removes the other caches beside it.

    Written into a temporary directory and renamed into place, so `path` only
    ever holds a complete save.

    Raises:
        OSError, tf.errors.OpError: if the directory cannot be written.
    """
    cache_dir, name = os.path.split(path)
    os.makedirs(cache_dir, exist_ok=True)
    tmp = os.path.join(cache_dir, f".{name}.{uuid.uuid4().hex}")
    try:
        for split, (images, labels) in arrays.items():
            tf.data.Dataset.from_tensors((images, labels)).save(os.path.join(tmp, split))
        with open(os.path.join(tmp, _SIZES), "w") as f:
            json.dump({split: len(labels) for split, (_, labels) in arrays.items()}, f)
        with open(os.path.join(tmp, _METADATA_DIGEST), "w") as f:
            f.write(_metadata_digest(tmp))
        shutil.rmtree(path, ignore_errors=True)  # A damaged copy.
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # Only left if the save failed.
    # Caches of earlier preparations, an older format (.npz), interrupted saves.
    for other in os.listdir(cache_dir):
        if other != name:
            other = os.path.join(cache_dir, other)
            if os.path.isdir(other):
                shutil.rmtree(other, ignore_errors=True)
            else:
                os.remove(other)


def decoded_arrays(builder) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """uint8 images [N, 28, 28, 1] and int64 labels [N] of "train" and "test", in TFDS order.

    Read from the decoded cache (`DECODED_CACHE_DIR`) when it matches the
    prepared files and is intact; otherwise decoded by TFDS and saved there (a
    read-only data dir just means decoding every time).

    Args:
        builder: TFDS's `mnist` builder over a prepared data dir.
    """
    path = _cache_path(builder.data_dir, str(builder.version))
    sizes = {split: builder.info.splits[split].num_examples for split in _DECODED_SPLITS}
    arrays = _load_decoded(path, sizes)
    if arrays is not None:
        return {split: (images.numpy(), labels.numpy())
                for split, (images, labels) in arrays.items()}
    import tensorflow_datasets as tfds

    arrays = {
        split: tuple(tfds.as_numpy(builder.as_dataset(
            split=split, batch_size=-1, as_supervised=True, shuffle_files=False)))
        for split in sizes
    }
    try:
        _save_decoded(arrays, path)
    except (OSError, tf.errors.OpError):
        pass  # Not writable: the cache is an optimisation only.
    return arrays


def _unreadable(data_dir: str, error: Exception) -> DataError:
    """The one-line error for a prepared copy TFDS cannot read (other version, damage)."""
    reason = " ".join(str(error).split())  # TFDS's messages may span lines.
    return DataError(
        f"cannot read the prepared mnist in {data_dir}: {reason}; move "
        f"{sources.dataset_dir(data_dir)} away to have it prepared again, or pass another "
        "--data_dir")


def load_splits(data_dir: str, validation_size: int) -> Splits:
    """Loads the prepared TFDS `mnist` from `data_dir` and splits it.

    Args:
        data_dir: TFDS data directory holding a prepared `mnist/3.0.1`.
        validation_size: examples carved from the end of the train split.

    Returns:
        The `Splits`.

    Raises:
        UserError: if `validation_size` leaves no training data.
        DataError: if the prepared data cannot be read.
    """
    try:
        # An intact decoded cache of these prepared files needs no TFDS: its
        # import and builder are a third of a second of every start.
        arrays = _load_decoded(_cache_path(str(sources.dataset_dir(data_dir)),
                                           mirror.DATASET_VERSION))
    except OSError:  # No prepared files to fingerprint; TFDS says what is wrong.
        arrays = None
    if arrays is not None:
        _check_validation_size(validation_size, len(arrays["train"][1]))
    else:
        arrays = _decoded_by_tfds(data_dir, validation_size)
    num_train = len(arrays["train"][1]) - validation_size
    (train_images, train_labels), (test_images, test_labels) = arrays["train"], arrays["test"]
    validation = None
    if validation_size:
        validation = from_arrays(train_images[num_train:], train_labels[num_train:])
        train_images, train_labels = train_images[:num_train], train_labels[:num_train]
    return Splits(
        train=from_arrays(train_images, train_labels),
        validation=validation,
        test=from_arrays(test_images, test_labels),
        num_train=num_train,
        num_validation=validation_size,
        num_test=len(test_labels),
    )


def _check_validation_size(validation_size: int, num_all_train: int) -> None:
    """Raises UserError if `validation_size` leaves no training examples."""
    if validation_size >= num_all_train:
        raise UserError(
            f"--validation_size: {validation_size} leaves no training examples "
            f"(the train split has {num_all_train})"
        )


def _decoded_by_tfds(data_dir: str,
                     validation_size: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`decoded_arrays` through TFDS's builder, `validation_size` checked before decoding.

    Raises:
        UserError: if `validation_size` leaves no training data.
        DataError: if TFDS cannot read the prepared data.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder("mnist", data_dir=data_dir)
        num_all_train = builder.info.splits["train"].num_examples
    except Exception as e:  # noqa: BLE001 - TFDS raises many types on bad metadata.
        raise _unreadable(data_dir, e) from None
    _check_validation_size(validation_size, num_all_train)
    try:
        return decoded_arrays(builder)
    except Exception as e:  # noqa: BLE001 - TFDS raises many types on damaged records.
        raise _unreadable(data_dir, e) from None


# Elements in flight while the step runs: two being gathered and two ready;
# enough to hide a gather from memory behind any step. Fixed rather than one
# per core: each holds a whole chunk (50 batches), and a many-core machine
# would hold that many.
PARALLEL_GATHERS = 2
PREFETCH_ELEMENTS = 2


def gathered(indices: tf.data.Dataset, gather) -> tf.data.Dataset:
    """`indices` mapped by `gather`, two at a time, prefetched, with tf.data's autotuner off.

    The autotuner runs a thread per iterator that sleeps up to a minute between
    rounds, and deleting an iterator that has not reached its end waits for
    that sleep to end (the destructor joins the thread; cancelling does not
    wake it), so a run stopped mid-epoch would stall for up to a minute.
    Gathers from tensors in memory need no tuning: a fixed width does as well.
    """
    dataset = indices.map(gather, num_parallel_calls=PARALLEL_GATHERS, deterministic=True)
    return dataset.prefetch(PREFETCH_ELEMENTS).with_options(_without_autotuner())


def _without_autotuner() -> tf.data.Options:
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def epoch_order(num_examples: int, seed: int, epoch: int) -> tf.Tensor:
    """The order of epoch `epoch`: a permutation of [0, num_examples), int32.

    A stateless shuffle keyed by (seed, epoch): each epoch has its own order,
    and a resumed run can rebuild it.
    """
    noise = tf.random.stateless_uniform([num_examples], seed=[seed, epoch])
    return tf.cast(tf.argsort(noise), tf.int32)


def train_batches(
    train: Examples,
    batch_size: int,
    seed: int,
    epoch: int,
    skip_batches: int = 0,
) -> tf.data.Dataset:
    """Returns epoch `epoch`'s shuffled, full training batches.

    Args:
        train: the training examples.
        batch_size: examples per batch; the last partial batch is dropped.
        seed: the run's seed.
        epoch: 0-based epoch number; each epoch has its own order.
        skip_batches: batches of this epoch already trained on (when resuming).

    Returns:
        (images uint8 [batch_size, 784], labels int32 [batch_size]) batches,
        gathered from `train` in `epoch_order(len(train), seed, epoch)`.
    """
    order = epoch_order(len(train), seed, epoch)
    steps = len(train) // batch_size
    batches = tf.reshape(order[: steps * batch_size], [steps, batch_size])[skip_batches:]

    def gather(index):
        return tf.gather(train.images, index), tf.gather(train.labels, index)

    dataset = tf.data.Dataset.from_tensor_slices(batches)
    return gathered(dataset, gather)


def train_chunks(
    num_examples: int,
    batch_size: int,
    seed: int,
    epoch: int,
    counts: list[int],
    chunk_size: int,
    skip_batches: int = 0,
) -> tf.data.Dataset:
    """Returns epoch `epoch`'s batches as index chunks, one chunk per traced call.

    The same batches, in the same order, as `train_batches`, but as the
    examples' indices: the runner gathers the images from the split held on
    the device inside its compiled loop, so each call receives 25 KB of
    int32 (at 50 x 128) instead of 5 MB of pixels. Call `c` takes the next
    `counts[c]` batches. Each chunk is padded to `chunk_size` batches
    (repeating its first batch; the padding is never trained on) so every
    element has one static shape and the compiled loop is traced once.

    The chunks are sliced from one tensor on the caller's thread, with no
    `map` and no `prefetch`: there is nothing to compute ahead, and on two
    cores the threads of a mapping, prefetching pipeline woke for every
    element and competed with the step (6 % of the step rate at batch 128;
    docs/speed.md, "Against JAX").

    Args:
        num_examples: the size of the training split.
        batch_size: examples per batch.
        seed: the run's seed.
        epoch: 0-based epoch number.
        counts: the steps of each call of the epoch, from `skip_batches` on;
            each at most `chunk_size`, summing to at most the batches left.
        chunk_size: the static number of batches in a chunk.
        skip_batches: batches of this epoch already trained on (when resuming).

    Returns:
        (index int32 [chunk_size, batch_size], count int32) elements, one per call.
    """
    order = epoch_order(num_examples, seed, epoch)
    steps = num_examples // batch_size
    batches = tf.reshape(order[: steps * batch_size], [steps, batch_size])
    starts = skip_batches + np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
    within = np.arange(chunk_size, dtype=np.int32)
    # Batch row of each chunk slot: the call's own rows, then its first row again.
    rows = starts[:, None] + np.where(within[None, :] < np.asarray(counts)[:, None], within, 0)
    rows = rows.reshape([len(counts), chunk_size])  # Also for a plan of no calls.
    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.gather(batches, rows), np.asarray(counts, np.int32)))
    return dataset.with_options(_without_autotuner())


def for_distribution(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Marks a dataset of global batches for `strategy.experimental_distribute_dataset`.

    The batches come from tensors in memory, not files, so workers shard by
    data: tf.distribute splits each global batch into per-replica batches and
    every replica, on every worker, takes its own slice of every global batch.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def eval_batches(examples: Examples, batch_size: int) -> tf.data.Dataset:
    """Returns (images, labels, mask) batches in order, the last one padded to `batch_size`."""
    count = len(examples)
    steps = -(-count // batch_size)
    # Padding rows repeat example 0 and are masked out.
    index = tf.pad(tf.range(count), [[0, steps * batch_size - count]])
    mask = tf.sequence_mask(count, steps * batch_size)

    def gather(index, mask):
        images = tf.gather(examples.images, index)
        images = tf.where(mask[:, None], images, tf.zeros_like(images))
        return images, tf.gather(examples.labels, index), mask

    dataset = tf.data.Dataset.from_tensor_slices((tf.reshape(index, [steps, batch_size]),
                                                  tf.reshape(mask, [steps, batch_size])))
    return gathered(dataset, gather)
