"""The one batched-prediction loop: model inputs in, class probabilities out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mnist_tf.constants import NUM_CLASSES

if TYPE_CHECKING:  # analysis loads TensorFlow (through data.pipeline).
    from mnist_tf.analysis import Predictions
    from mnist_tf.data.pipeline import Examples

BATCH_SIZE = 256


def predict_in_batches(predict_fn, pixels: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Runs `predict_fn` over model inputs a batch at a time.

    The command line's files, its test examples, `mnist_tf.Classifier.predict`
    and the figures' split predictions (`predict_split`) all go through this
    loop, so they batch (and round) the same way.

    Args:
        predict_fn: `inference.restore.make_predict_fn(model)`.
        pixels: float32 [N, NUM_PIXELS] in [0, 1] (N may be 0).
        batch_size: images per call, bounding the memory one call needs.

    Returns:
        float32 probabilities [N, NUM_CLASSES].
    """
    batches = [predict_fn(pixels[start:start + batch_size]).numpy()
               for start in range(0, len(pixels), batch_size)]
    return np.concatenate(batches) if batches else np.zeros((0, NUM_CLASSES), np.float32)


def predict_split(predict_fn, examples: Examples, batch_size: int = 1000) -> Predictions:
    """Runs `predict_fn` over a whole split held in memory (`data.pipeline.Examples`).

    The split's pixels are normalised as the traced steps normalise them
    (`constants.model_input`), then go through `predict_in_batches`.

    Args:
        predict_fn: `inference.restore.make_predict_fn(model)`.
        examples: the split (uint8 pixels 0..255, or floats already in [0, 1]).
        batch_size: images per call.

    Returns:
        `analysis.Predictions` over the split, in its order.
    """
    from mnist_tf.analysis import Predictions
    from mnist_tf.constants import model_input

    pixels = model_input(examples.images).numpy()
    probabilities = predict_in_batches(predict_fn, pixels, batch_size)
    return Predictions(examples.images.numpy(), examples.labels.numpy(), probabilities)
