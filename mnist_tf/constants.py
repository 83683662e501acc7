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
    one function, so they agree bit for bit. It looks each pixel up in a
    256-entry table of `k / 255` rather than dividing: inside a `tf.function`
    grappler (and XLA) turn `x / 255` into `x * (1/255)`, which differs from
    the true quotient in the last bit for about half of the 256 pixel values
    (measured on TF 2.21), so the same image would give other inputs eagerly,
    in a graph and under XLA. A lookup is exact everywhere. TensorFlow is imported here, not
    at module level, so that importing the constants stays cheap.

    Args:
        images: uint8 tensor or array of one or more digits.

    Returns:
        A float32 tensor [N, 784].
    """
    import numpy as np
    import tensorflow as tf

    table = tf.constant(np.arange(256, dtype=np.float32) / np.float32(PIXEL_SCALE))
    pixels = tf.gather(table, tf.cast(images, tf.int32))
    return tf.reshape(pixels, [-1, NUM_PIXELS])


def model_input(images):
    """The model's float32 [N, 784] input: uint8 pixels normalised, floats taken as they are.

    The rule every path shares: the traced train and eval steps call this on
    the splits, which are held as uint8 (a quarter of float32's memory), so
    normalising costs one table lookup per pixel inside the step
    (`normalize`); `mnist_tf.data.preprocess.to_model_input` checks images
    from files, arrays and the API and then calls it. Floats (tests, callers
    who normalised already) are taken to be in [0, 1] and of the model's shape.
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    return normalize(images) if images.dtype == tf.uint8 else images
