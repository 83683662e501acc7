"""Data augmentation: small random affine warps of flattened 28x28 digits.

Each image gets its own rotation, scale and shift, drawn with stateless random
ops from a seed the caller passes in (so a run's augmentations are
reproducible and resumable), and is resampled bilinearly. Written with plain
gathers rather than `ImageProjectiveTransform`, so it also compiles with XLA.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

SIZE = 28
CENTRE = (SIZE - 1) / 2.0


@dataclasses.dataclass(frozen=True)
class AffineAugment:
    """Random affine warp parameters (each drawn uniformly in [-max, max] per image).

    Attributes:
        max_rotation_degrees: rotation range.
        max_scale: relative scale range (0.1: 90% to 110%).
        max_shift_pixels: translation range in each direction.
    """

    max_rotation_degrees: float = 10.0
    max_scale: float = 0.1
    max_shift_pixels: float = 2.0

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
        return warp(images, angle, scale, shift)


def warp(images: tf.Tensor, angle: tf.Tensor, scale: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
    """Rotates by `angle` (radians), scales by `scale` about the centre, then shifts.

    Args:
        images: float [batch, 784].
        angle: [batch] radians, counter-clockwise as displayed (y down).
        scale: [batch] factors (>1 enlarges).
        shift: [batch, 2] (dx, dy) in pixels (+x right, +y down).

    Returns:
        float [batch, 784], bilinearly resampled.
    """
    dtype = images.dtype
    images = tf.cast(images, tf.float32)
    ys, xs = tf.meshgrid(tf.range(SIZE, dtype=tf.float32), tf.range(SIZE, dtype=tf.float32),
                         indexing="ij")
    # Inverse mapping: for every output pixel, where in the input does it come from?
    px = tf.reshape(xs, [1, -1]) - CENTRE - shift[:, 0:1]
    py = tf.reshape(ys, [1, -1]) - CENTRE - shift[:, 1:2]
    cos, sin = tf.cos(angle)[:, None], tf.sin(angle)[:, None]
    inv_scale = 1.0 / scale[:, None]
    source_x = (cos * px - sin * py) * inv_scale + CENTRE
    source_y = (sin * px + cos * py) * inv_scale + CENTRE

    x0, y0 = tf.floor(source_x), tf.floor(source_y)
    wx, wy = source_x - x0, source_y - y0

    def tap(x, y):
        inside = (x >= 0) & (x <= SIZE - 1) & (y >= 0) & (y <= SIZE - 1)
        index = tf.cast(tf.clip_by_value(y, 0, SIZE - 1) * SIZE
                        + tf.clip_by_value(x, 0, SIZE - 1), tf.int32)
        return tf.where(inside, tf.gather(images, index, batch_dims=1), 0.0)

    warped = ((1 - wx) * (1 - wy) * tap(x0, y0) + wx * (1 - wy) * tap(x0 + 1, y0)
              + (1 - wx) * wy * tap(x0, y0 + 1) + wx * wy * tap(x0 + 1, y0 + 1))
    return tf.cast(warped, dtype)
