"""The tf.data input pipeline: TFDS `mnist` -> float32 [784] -> cache -> shuffle -> batch.

Splits: `train` and `validation` are carved from TFDS's train split (the last
`validation_size` examples are validation; the test split is never touched
for model selection), `test` is TFDS's test split.

Batches have static shapes so each traced step is traced once:

* training drops the last partial batch of each epoch; since every epoch is
  reshuffled, a different handful of examples sits out each epoch;
* evaluation pads the last batch to full size and returns a mask, so every
  example is counted exactly once.

The training order of epoch `e` depends only on `(seed, e)` (see
`epoch_seed`), which is what lets a resumed run pick up the data order where
the checkpoint left it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from mnist_tf.errors import DataError, UserError

NUM_PIXELS = 28 * 28
NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Splits:
    """Preprocessed, cached, unbatched splits of (image float32 [784], label int32).

    Attributes:
        train: training examples.
        validation: validation examples, or None when `validation_size` is 0.
        test: the official test set.
        num_train: number of training examples.
        num_validation: number of validation examples.
        num_test: number of test examples.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    test: tf.data.Dataset
    num_train: int
    num_validation: int
    num_test: int


def preprocess(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Maps a uint8 [28, 28, 1] image to float32 [784] in [0, 1] and the label to int32."""
    pixels = tf.reshape(tf.cast(image, tf.float32) / 255.0, [NUM_PIXELS])
    return pixels, tf.cast(label, tf.int32)


def _prepare(dataset: tf.data.Dataset) -> tf.data.Dataset:
    # Decoding PNGs is the slow part; cache the result so it happens once per run.
    return dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE).cache()


def from_arrays(images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
    """Builds an unbatched, preprocessed dataset from uint8 [N, 28, 28, 1] arrays (for tests)."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    return _prepare(dataset)


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
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder("mnist", data_dir=data_dir)
        num_all_train = builder.info.splits["train"].num_examples
        num_test = builder.info.splits["test"].num_examples
    except Exception as e:  # noqa: BLE001 - TFDS raises many types on bad metadata.
        raise DataError(f"cannot read the prepared mnist in {data_dir}: {e}") from None
    if validation_size >= num_all_train:
        raise UserError(
            f"--validation_size: {validation_size} leaves no training examples "
            f"(the train split has {num_all_train})"
        )
    num_train = num_all_train - validation_size

    def load(split):
        return builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)

    train = load(f"train[:{num_train}]")
    validation = load(f"train[{num_train}:]") if validation_size else None
    test = load("test")
    return Splits(
        train=_prepare(train),
        validation=_prepare(validation) if validation is not None else None,
        test=_prepare(test),
        num_train=num_train,
        num_validation=validation_size,
        num_test=num_test,
    )


def epoch_seed(seed: int, epoch: int) -> int:
    """Returns the shuffle seed of `epoch`: a fixed function of (seed, epoch)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def train_batches(
    train: tf.data.Dataset,
    num_train: int,
    batch_size: int,
    seed: int,
    epoch: int,
    skip_batches: int = 0,
) -> tf.data.Dataset:
    """Returns epoch `epoch`'s shuffled, full training batches.

    Args:
        train: the cached, unbatched training examples.
        num_train: how many there are (the shuffle buffer holds all of them, a
            full uniform shuffle).
        batch_size: examples per batch; the last partial batch is dropped.
        seed: the run's seed.
        epoch: 0-based epoch number; each epoch has its own order.
        skip_batches: batches of this epoch already trained on (when resuming).
    """
    dataset = train.shuffle(num_train, seed=epoch_seed(seed, epoch), reshuffle_each_iteration=False)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    if skip_batches:
        dataset = dataset.skip(skip_batches)
    return dataset.prefetch(tf.data.AUTOTUNE)


def materialize(examples: tf.data.Dataset, count: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Returns all `count` (image, label) examples as two tensors [count, 784] and [count]."""
    images, labels = next(iter(examples.batch(count)))
    return images, labels


def epoch_order(num_examples: int, seed: int, epoch: int) -> tf.Tensor:
    """The order of epoch `epoch` for data held as tensors: int32 [num_examples].

    A stateless shuffle keyed by (seed, epoch), so, like `train_batches`, each
    epoch has its own order and a resumed run can rebuild it.
    """
    noise = tf.random.stateless_uniform([num_examples], seed=[seed, epoch])
    return tf.cast(tf.argsort(noise), tf.int32)


def eval_batches(examples: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """Returns (images, labels, mask) batches, the last one padded to `batch_size`."""

    def pad(images, labels):
        count = tf.shape(labels)[0]
        missing = batch_size - count
        images = tf.pad(images, [[0, missing], [0, 0]])
        labels = tf.pad(labels, [[0, missing]])
        mask = tf.sequence_mask(count, batch_size)
        images = tf.ensure_shape(images, [batch_size, NUM_PIXELS])
        return images, tf.ensure_shape(labels, [batch_size]), mask

    dataset = examples.batch(batch_size).map(pad, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
