import numpy as np
import pytest
import tensorflow as tf

from mnist_tf import data
from mnist_tf.errors import UserError


@pytest.fixture(scope="module")
def splits(small_data_dir):
    return data.load_splits(small_data_dir, validation_size=100)


def as_arrays(dataset):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.stack(images), np.array(labels)


def test_split_sizes_and_element_format(splits):
    assert (splits.num_train, splits.num_validation, splits.num_test) == (500, 100, 200)
    images, labels = as_arrays(splits.train)
    assert images.shape == (500, 784) and images.dtype == np.float32
    assert labels.dtype == np.int32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.max() > 0.7  # Scaled by 1/255, not left as 0..255 or crushed.


def test_validation_is_carved_from_train_never_from_test(splits, small_data_dir):
    train, _ = as_arrays(splits.train)
    validation, _ = as_arrays(splits.validation)
    test, _ = as_arrays(splits.test)
    assert len(validation) == 100
    rows = {row.tobytes() for row in train}
    assert not any(row.tobytes() in rows for row in validation)
    assert not any(row.tobytes() in rows for row in test)
    full = data.load_splits(small_data_dir, validation_size=0)
    assert full.validation is None and full.num_train == 600
    everything = {row.tobytes() for row in as_arrays(full.train)[0]}
    assert all(row.tobytes() in everything for row in validation)


def test_validation_size_too_large_is_a_user_error(small_data_dir):
    with pytest.raises(UserError, match="--validation_size"):
        data.load_splits(small_data_dir, validation_size=600)


def test_train_batches_have_static_shape_and_drop_the_remainder(splits):
    batches = data.train_batches(splits.train, splits.num_train, 64, seed=0, epoch=0)
    assert batches.element_spec[0].shape == (64, 784)
    sizes = [len(y) for _, y in batches]
    assert sizes == [64] * (500 // 64)


def test_each_epoch_has_its_own_reproducible_order(splits):
    def labels(epoch, skip=0):
        batches = data.train_batches(splits.train, splits.num_train, 50, seed=0, epoch=epoch,
                                     skip_batches=skip)
        return np.concatenate([y.numpy() for _, y in batches])

    epoch0, epoch1 = labels(0), labels(1)
    np.testing.assert_array_equal(epoch0, labels(0))
    assert not np.array_equal(epoch0, epoch1)
    assert sorted(epoch0) == sorted(epoch1)  # A permutation of the same examples.
    # Resuming after 3 batches yields exactly the rest of that epoch.
    np.testing.assert_array_equal(labels(1, skip=3), epoch1[150:])


def test_eval_batches_pad_the_last_batch_and_mask_it(splits):
    batches = list(data.eval_batches(splits.test, 64))
    assert len(batches) == 4  # 200 = 3 * 64 + 8
    for images, labels, mask in batches:
        assert images.shape == (64, 784) and labels.shape == (64,) and mask.shape == (64,)
    assert sum(int(tf.reduce_sum(tf.cast(m, tf.int32))) for _, _, m in batches) == 200
    last_images, _, last_mask = batches[-1]
    assert last_mask.numpy().tolist() == [True] * 8 + [False] * 56
    assert float(tf.reduce_sum(last_images[8:])) == 0.0


def test_epoch_seed_is_a_fixed_function():
    assert data.epoch_seed(0, 0) == data.epoch_seed(0, 0)
    assert len({data.epoch_seed(s, e) for s in range(3) for e in range(3)}) == 9
