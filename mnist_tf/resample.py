"""Bilinear resampling of 28x28 digits at arbitrary source points, XLA-compilable.

Shared by the training augmentation (`mnist_tf/data/augment.py`: affine warps
and elastic distortions) and the model's deskewing input transform
(`mnist_tf/model/deskew.py`), so both sample pixels the same way. Plain
gathers rather than `ImageProjectiveTransform`, so it compiles with XLA.
"""

from __future__ import annotations

import tensorflow as tf

from mnist_tf.constants import IMAGE_SIZE

SIZE = IMAGE_SIZE
CENTRE = (SIZE - 1) / 2.0


def output_grid() -> tuple[tf.Tensor, tf.Tensor]:
    """The output pixels' (x, y) coordinates, each float32 [1, 784], row-major."""
    ys, xs = tf.meshgrid(tf.range(SIZE, dtype=tf.float32), tf.range(SIZE, dtype=tf.float32),
                         indexing="ij")
    return tf.reshape(xs, [1, -1]), tf.reshape(ys, [1, -1])


def bilinear(images: tf.Tensor, source_x: tf.Tensor, source_y: tf.Tensor) -> tf.Tensor:
    """Samples each output pixel of `images` at its source point, bilinearly.

    Args:
        images: float32 [batch, 784], row-major 28x28.
        source_x: [batch, 784] the column each output pixel reads from (may be fractional).
        source_y: [batch, 784] its row.

    Returns:
        float32 [batch, 784]; a tap outside the image reads 0 (the background).
    """
    x0, y0 = tf.floor(source_x), tf.floor(source_y)
    wx, wy = source_x - x0, source_y - y0

    def tap(x, y):
        inside = (x >= 0) & (x <= SIZE - 1) & (y >= 0) & (y <= SIZE - 1)
        index = tf.cast(tf.clip_by_value(y, 0, SIZE - 1) * SIZE
                        + tf.clip_by_value(x, 0, SIZE - 1), tf.int32)
        return tf.where(inside, tf.gather(images, index, batch_dims=1), 0.0)

    return ((1 - wx) * (1 - wy) * tap(x0, y0) + wx * (1 - wy) * tap(x0 + 1, y0)
            + (1 - wx) * wy * tap(x0, y0 + 1) + wx * wy * tap(x0 + 1, y0 + 1))
