"""Deskewing: the input transform that straightens each digit's slant (`--deskew`).

A classic MNIST preprocessing (LeCun et al.'s results table lists it beside
several classifiers; e.g. a 300-unit MLP's error fell from 4.7 % to 1.6 %):
from the image's pixel moments, the slant is the shear `alpha = cov(x, y) /
var(y)` that best explains how the ink's column drifts with its row. The
image is resampled with the opposite shear about its centre of mass, which
is moved to the image centre, so a slanted stroke comes out upright.

It is part of the model (`MLP(deskew=True)` calls it first), not of the data
pipeline, so training, evaluation, prediction, the Python API and the
exported SavedModel all deskew the same way, and it runs inside the traced,
XLA-compiled step after any augmentation. It has no variables: checkpoints
are the same with or without it.
"""

from __future__ import annotations

import tensorflow as tf

from mnist_tf import resample
from mnist_tf.resample import CENTRE

# The largest slant undone, as a shear (1: 45 degrees). Real digits lie well
# inside it; it bounds what a stray blob or a near-flat stroke could ask for.
MAX_SHEAR = 1.0


def moments(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Each image's centre of mass and shear: (mean_x, mean_y, alpha), each float32 [batch, 1].

    Args:
        images: float32 [batch, 784], ink > 0 on a 0 background.
    """
    xs, ys = resample.output_grid()
    total = tf.maximum(tf.reduce_sum(images, axis=1, keepdims=True), 1e-6)
    mean_x = tf.reduce_sum(images * xs, axis=1, keepdims=True) / total
    mean_y = tf.reduce_sum(images * ys, axis=1, keepdims=True) / total
    dy = ys - mean_y
    var_y = tf.reduce_sum(images * dy * dy, axis=1, keepdims=True) / total
    cov_xy = tf.reduce_sum(images * (xs - mean_x) * dy, axis=1, keepdims=True) / total
    alpha = tf.clip_by_value(cov_xy / tf.maximum(var_y, 1e-6), -MAX_SHEAR, MAX_SHEAR)
    return mean_x, mean_y, alpha


def deskew(images: tf.Tensor) -> tf.Tensor:
    """Straightens and centres each digit.

    Output pixel (x, y) reads the input at (x + alpha (y - c) + mean_x - c,
    y + mean_y - c), c = 13.5 the image centre: the stroke
    x = mean_x + alpha (y - mean_y) comes out as the vertical x = c.

    Args:
        images: float [batch, 784] in [0, 1].

    Returns:
        The deskewed images, same shape and dtype.
    """
    dtype = images.dtype
    images = tf.cast(images, tf.float32)
    mean_x, mean_y, alpha = moments(images)
    xs, ys = resample.output_grid()
    source_x = xs + alpha * (ys - CENTRE) + (mean_x - CENTRE)
    source_y = ys + (mean_y - CENTRE)
    return tf.cast(resample.bilinear(images, source_x, source_y), dtype)
