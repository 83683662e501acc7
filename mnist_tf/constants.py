"""MNIST's fixed shapes and the one pixel normalisation every path shares."""

from __future__ import annotations

IMAGE_SIZE = 28
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE  # 784: the model sees each digit flattened.
NUM_CLASSES = 10
# uint8 pixels are divided by this: the model's inputs lie in [0, 1].
PIXEL_SCALE = 255.0


def normalize(images):
    """Maps uint8 images [..., 28, 28(, 1)] to float32 [N, 784] in [0, 1].

    Training, evaluation, prediction and the exported SavedModel all call this
    one function, so they agree bit for bit. TensorFlow is imported here, not
    at module level, so that importing the constants stays cheap.

    Args:
        images: uint8 (or float 0..255) tensor or array of one or more digits.

    Returns:
        A float32 tensor [N, 784].
    """
    import tensorflow as tf

    return tf.reshape(tf.cast(images, tf.float32) / PIXEL_SCALE, [-1, NUM_PIXELS])
