"""The one batched-prediction loop: model inputs in, class probabilities out."""

from __future__ import annotations

import numpy as np

from mnist_tf.constants import NUM_CLASSES

BATCH_SIZE = 256


def predict_in_batches(predict_fn, pixels: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Runs `predict_fn` over model inputs a batch at a time.

    The command line's files, its test examples and `mnist_tf.Classifier.predict`
    all go through this loop, so they batch (and round) the same way.

    Args:
        predict_fn: `inference.make_predict_fn(model)`.
        pixels: float32 [N, NUM_PIXELS] in [0, 1] (N may be 0).
        batch_size: images per call, bounding the memory one call needs.

    Returns:
        float32 probabilities [N, NUM_CLASSES].
    """
    batches = [predict_fn(pixels[start:start + batch_size]).numpy()
               for start in range(0, len(pixels), batch_size)]
    return np.concatenate(batches) if batches else np.zeros((0, NUM_CLASSES), np.float32)
