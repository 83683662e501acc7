"""Classification analysis: a split's predictions, confusion matrix, per-class metrics."""

from __future__ import annotations

import dataclasses

import numpy as np

from mnist_tf.constants import NUM_CLASSES


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Model outputs over a whole split, for drawing them (`inference.predict.predict_split`).

    Metrics (loss, accuracy for reports) come from
    `training.evaluation.evaluate`, not from these outputs.

    Attributes:
        images: the split's images as held: uint8 [N, NUM_PIXELS] pixels 0..255
            (or floats already in [0, 1]).
        labels: int [N] true classes.
        probabilities: float32 [N, NUM_CLASSES].
    """

    images: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        """The predicted classes, int [N]."""
        return self.probabilities.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        """Fraction of correct predictions."""
        return float((self.predicted == self.labels).mean())


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray,
                     num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Returns int64 [num_classes, num_classes]: rows are true classes, columns predictions."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
    return matrix


def precision_recall(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision (of each predicted column) and recall (of each true row).

    A class never predicted has precision 0 (no correct predictions); a class
    absent from the labels has recall 0.
    """
    diagonal = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = np.divide(diagonal, predicted, out=np.zeros_like(diagonal), where=predicted > 0)
    recall = np.divide(diagonal, actual, out=np.zeros_like(diagonal), where=actual > 0)
    return precision, recall


def format_confusion_matrix(matrix: np.ndarray) -> str:
    """Renders the matrix as a fixed-width text table (rows: true, columns: predicted)."""
    width = max(5, len(str(matrix.max())) + 1)
    header = "true\\pred" + "".join(f"{c:>{width}}" for c in range(matrix.shape[1]))
    rows = [f"{r:>9}" + "".join(f"{v:>{width}}" for v in matrix[r]) for r in range(len(matrix))]
    return "\n".join([header, *rows])
