"""EMA, elastic distortions and deskewing on the real MNIST, through the real data path."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import mnist_tf
from mnist_tf.config import TrainConfig
from mnist_tf.constants import model_input
from mnist_tf.data import pipeline
from mnist_tf.data.augment import AffineAugment
from mnist_tf.model.deskew import deskew, moments
from mnist_tf.training import trainer

# One epoch of a 256-unit model in this process, on the default fast path.
RUN = dict(hidden_sizes=(256,), batch_size=128, epochs=1, validation_size=5000,
           learning_rate=2e-3, lr_schedule="cosine", log_every_steps=200,
           histogram_every_steps=0)


def train(workdir, data_dir, **settings):
    lines = []
    results = trainer.train_and_evaluate(TrainConfig(**RUN, **settings), str(workdir),
                                         data_dir=data_dir, allow_download=False,
                                         log=lines.append)
    return results, lines


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, real_data):
    workdir = tmp_path_factory.mktemp("plain")
    results, _ = train(workdir, real_data[0])
    return workdir, results


@pytest.mark.real_data
def test_averaging_and_elastic_distortions_train_on_real_mnist(tmp_path, real_data, plain_run):
    results, lines = train(tmp_path, real_data[0], ema_decay=0.99, augment_elastic_alpha=34.0,
                           augment_elastic_sigma=4.0, augment_rotation_degrees=5.0, deskew=True)
    assert results["weights"] == "averaged"
    assert "Weights: evaluation and inference use the averaged weights (EMA, decay 0.99)" in lines
    assert any("28x28 pixels, deskewed, flattened" in line for line in lines)
    # Distorted digits are harder to fit in one epoch, yet the averaged model
    # is not far behind the plain one.
    assert results["test_accuracy"] >= 0.95, results
    assert results["validation_accuracy"] >= 0.95, results
    assert results["test_accuracy"] >= plain_run[1]["test_accuracy"] - 0.02


@pytest.mark.real_data
def test_distorted_digits_stay_readable_to_a_model_trained_without_distortions(
        real_data, plain_run):
    workdir, results = plain_run
    classifier = mnist_tf.load(str(workdir))
    test = pipeline.load_splits(real_data[0], validation_size=5000).test
    images, labels = test.images[:2000], test.labels[:2000].numpy()
    warp = AffineAugment(0.0, 0.0, 0.0, elastic_alpha=34.0, elastic_sigma=4.0)
    seed = tf.constant([0, 1], tf.int64)
    distorted = warp(model_input(images), seed)
    # The same seed draws the same warp.
    np.testing.assert_array_equal(distorted.numpy(), warp(model_input(images), seed).numpy())
    moved = np.abs(distorted.numpy() - model_input(images).numpy()).mean()
    assert moved > 0.02  # The digits really moved...

    def accuracy(pixels):
        probabilities = tf.nn.softmax(classifier.model(pixels))
        return float(np.mean(np.argmax(probabilities, axis=1) == labels))

    # ...and most stayed the digits they were (measured 0.72 against 0.95
    # undistorted, on one epoch of a model that never saw a distortion).
    clean, warped = accuracy(model_input(images)), accuracy(distorted)
    assert clean >= 0.95
    assert warped >= 0.6, (clean, warped)


@pytest.mark.real_data
def test_deskewing_straightens_and_centres_real_test_digits(real_data):
    test = pipeline.load_splits(real_data[0], validation_size=5000).test
    images = model_input(test.images[:2000])
    before, after = moments(images), moments(deskew(images))
    slant_before = float(np.abs(before[2].numpy()).mean())
    slant_after = float(np.abs(after[2].numpy()).mean())
    # Real digits lean by about a fifth of a pixel per row on average; deskewed, they stand
    # up (what is left comes from resampling a sheared image onto the pixel grid).
    assert slant_before > 0.1 and slant_after < 0.25 * slant_before, (slant_before, slant_after)
    assert np.abs(after[0].numpy() - 13.5).max() < 0.5
    assert np.abs(after[1].numpy() - 13.5).max() < 0.5
