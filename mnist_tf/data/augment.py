"""Data augmentation: random affine warps and elastic distortions of 28x28 digits.

Each image gets its own rotation, scale and shift, drawn with stateless random
ops from a seed the caller passes in (so a run's augmentations are
reproducible and resumable). Optionally an elastic distortion (Simard,
Steinkraus & Platt 2003, "Best practices for convolutional neural networks
applied to visual document analysis"): a random displacement field, uniform
in [-1, 1] per pixel and direction, smoothed by a Gaussian of `sigma` pixels
and scaled by `alpha` pixels, moves every output pixel's source point after
the affine map, so both are one bilinear resampling. Written with plain
gathers and matmuls rather than `ImageProjectiveTransform`, so it compiles
with XLA; the field's random numbers come from `mnist_tf/random_hash.py`,
fast under XLA where TensorFlow's stateless random ops are not.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from mnist_tf import random_hash, resample
from mnist_tf.resample import CENTRE, SIZE


@dataclasses.dataclass(frozen=True)
class AffineAugment:
    """Random warp parameters: affine (each drawn uniformly in [-max, max] per image), elastic.

    Attributes:
        max_rotation_degrees: rotation range.
        max_scale: relative scale range (0.1: 90% to 110%).
        max_shift_pixels: translation range in each direction.
        elastic_alpha: scale of the elastic displacement, in pixels (0: none).
        elastic_sigma: standard deviation of its Gaussian smoothing, in pixels.
    """

    max_rotation_degrees: float = 10.0
    max_scale: float = 0.1
    max_shift_pixels: float = 2.0
    elastic_alpha: float = 0.0
    elastic_sigma: float = 0.0

    def __call__(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Warps a batch of flattened images.

        Args:
            images: float [batch, 784], background 0.
            seed: int [2] seed of this batch's warps.

        Returns:
            The warped images, same shape and dtype; pixels that come from
            outside the original image are 0.
        """
        batch = tf.shape(images)[0]
        u = tf.random.stateless_uniform([batch, 4], seed, -1.0, 1.0)
        angle = u[:, 0] * (self.max_rotation_degrees * math.pi / 180.0)
        scale = 1.0 + u[:, 1] * self.max_scale
        shift = u[:, 2:4] * self.max_shift_pixels
        displacement = None
        if self.elastic_alpha > 0.0:
            # Its own stream: the affine draws stay what they were without it.
            field_seed = tf.random.experimental.stateless_fold_in(seed, 1)
            displacement = elastic_displacement(batch, self.elastic_alpha, self.elastic_sigma,
                                                field_seed)
        return warp(images, angle, scale, shift, displacement)


def gaussian_smoothing_matrix(sigma: float) -> np.ndarray:
    """The Gaussian smoothing matrix G, float32 [28, 28], of standard deviation `sigma`.

    (G @ f)[i] = sum_j exp(-(i-j)^2 / 2 sigma^2) f[j] / (sigma sqrt(2 pi)): the
    normalised Gaussian filter with zeros beyond the border (SciPy's
    `gaussian_filter(mode="constant")` up to its kernel truncation); G @ F @ G^T
    smooths a 28x28 field in both directions, as two small matmuls.
    """
    offsets = np.arange(SIZE)[:, None] - np.arange(SIZE)[None, :]
    weights = np.exp(-(offsets**2) / (2.0 * sigma**2)) / (sigma * math.sqrt(2.0 * math.pi))
    return weights.astype(np.float32)


def elastic_displacement(batch: tf.Tensor, alpha: float, sigma: float,
                         seed: tf.Tensor) -> tf.Tensor:
    """Random smooth displacement fields [batch, 784, 2] (dx, dy), in pixels.

    Args:
        batch: number of fields (int32 scalar; may be known only at run time).
        alpha: scale of the displacement, in pixels.
        sigma: standard deviation of the Gaussian smoothing, in pixels (> 0).
        seed: int [2]; the fields are a pure function of (seed, batch).
    """
    field = random_hash.uniform(tf.stack([batch, 2, SIZE, SIZE]), seed)
    smoothing = tf.constant(gaussian_smoothing_matrix(sigma))
    field = tf.matmul(tf.matmul(smoothing, field), smoothing, transpose_b=True)
    return tf.transpose(tf.reshape(field * alpha, [batch, 2, SIZE * SIZE]), [0, 2, 1])


def warp(images: tf.Tensor, angle: tf.Tensor, scale: tf.Tensor, shift: tf.Tensor,
         displacement: tf.Tensor | None = None) -> tf.Tensor:
    """Rotates by `angle` (radians), scales by `scale` about the centre, then shifts.

    Args:
        images: float [batch, 784].
        angle: [batch] radians, counter-clockwise as displayed (y down).
        scale: [batch] factors (>1 enlarges).
        shift: [batch, 2] (dx, dy) in pixels (+x right, +y down).
        displacement: optional [batch, 784, 2] (dx, dy) added to each output
            pixel's source point after the affine map (an elastic distortion).

    Returns:
        float [batch, 784], bilinearly resampled.
    """
    dtype = images.dtype
    images = tf.cast(images, tf.float32)
    xs, ys = resample.output_grid()
    # Inverse mapping: for every output pixel, where in the input does it come from?
    px = xs - CENTRE - shift[:, 0:1]
    py = ys - CENTRE - shift[:, 1:2]
    cos, sin = tf.cos(angle)[:, None], tf.sin(angle)[:, None]
    inv_scale = 1.0 / scale[:, None]
    source_x = (cos * px - sin * py) * inv_scale + CENTRE
    source_y = (sin * px + cos * py) * inv_scale + CENTRE
    if displacement is not None:
        source_x += displacement[:, :, 0]
        source_y += displacement[:, :, 1]
    return tf.cast(resample.bilinear(images, source_x, source_y), dtype)
