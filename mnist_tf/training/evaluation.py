"""Evaluation passes over a split: metrics, confusion matrix and misclassified digits."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from mnist_tf import analysis, images
from mnist_tf.constants import NUM_CLASSES, NUM_PIXELS
from mnist_tf.training.steps import Metrics


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One pass of the eval step over a split: the one evaluation result type.

    Attributes:
        metrics: {"loss", "accuracy", "count"}.
        confusion: int64 [NUM_CLASSES, NUM_CLASSES] confusion matrix (rows true, columns
            predicted), or None if not requested.
        mistakes: (images [K, NUM_PIXELS] as held, labels [K], predicted [K]) of the
            first K misclassified examples in split order, or None if not
            requested.
    """

    metrics: dict[str, float]
    confusion: np.ndarray | None = None
    mistakes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def loss(self) -> float:
        """Mean cross-entropy over the split, as the eval step computed it."""
        return self.metrics["loss"]

    @property
    def accuracy(self) -> float:
        """Fraction of the split classified right."""
        return self.metrics["accuracy"]

    @property
    def precision(self) -> np.ndarray:
        """Per-class precision, float64 [NUM_CLASSES]; needs the confusion matrix."""
        return analysis.precision_recall(self.confusion)[0]

    @property
    def recall(self) -> np.ndarray:
        """Per-class recall, float64 [NUM_CLASSES]; needs the confusion matrix."""
        return analysis.precision_recall(self.confusion)[1]


def evaluate(
    eval_step,
    metrics: Metrics,
    batches: tf.data.Dataset,
    max_mistakes: int | None = None,
) -> Evaluation:
    """Runs `eval_step` over all of a split's `batches`.

    Args:
        eval_step: from `make_eval_step`, bound to `metrics`.
        metrics: reset here, then read once at the end.
        batches: the split's `pipeline.eval_batches` at the eval step's
            static batch size (built once per run: building it costs more
            than a small model's pass over it).
        max_mistakes: if not None, also builds the confusion matrix and keeps
            up to this many misclassified examples, from the same pass. That
            reads each batch's predictions back to the host, so only the split
            that gets images asks for it.

    Returns:
        The `Evaluation`.
    """
    metrics.reset()
    analyse = max_mistakes is not None
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    wrong_images, wrong_labels, wrong_predicted = [], [], []
    kept = 0
    for batch_images, labels, mask in batches:
        predicted = eval_step(batch_images, labels, mask)
        if not analyse:
            continue
        real = mask.numpy()  # Drops the padding rows of the last batch.
        true, guess = labels.numpy()[real], predicted.numpy()[real]
        confusion += analysis.confusion_matrix(true, guess)
        wrong = np.flatnonzero(true != guess)[:max_mistakes - kept]
        if len(wrong):
            wrong_images.append(batch_images.numpy()[real][wrong])
            wrong_labels.append(true[wrong])
            wrong_predicted.append(guess[wrong])
            kept += len(wrong)
    if not analyse:
        return Evaluation(metrics.result())
    mistakes = (
        np.concatenate(wrong_images) if wrong_images else np.zeros((0, NUM_PIXELS),
                                                                   np.uint8),
        np.concatenate(wrong_labels) if wrong_labels else np.zeros((0,), np.int32),
        np.concatenate(wrong_predicted) if wrong_predicted else np.zeros((0,), np.int32),
    )
    return Evaluation(metrics.result(), confusion, mistakes)


def accuracy_title(correct: int, count: int) -> str:
    """The accuracy line of every confusion-matrix title: `accuracy 98.31% (9831/10000 right)`.

    Built here once, for the trainer's TensorBoard images and the evaluate tool's PNG.
    """
    return f"accuracy {correct / max(count, 1):.2%} ({correct}/{count} right)"


def evaluation_images(evaluation: Evaluation) -> dict[str, images.Picture]:
    """Draws an analysed `Evaluation` for TensorBoard, each picture with its description.

    Returns:
        tag -> `images.Picture`: "confusion_matrix" always, titled with the
        accuracy, and "misclassified" (digits captioned "pred P true T") when
        there are mistakes.
    """
    matrix = evaluation.confusion
    correct, count = int(np.trace(matrix)), int(matrix.sum())
    title = accuracy_title(correct, count)
    pictures = {"confusion_matrix": images.Picture(
        images.confusion_matrix_image(matrix, title=title),
        f"Confusion matrix of this split at this step ({count} images): rows are the true "
        "digits, columns the model's predictions, each cell a count of images. The diagonal "
        "(right) is green and the errors red, both shaded by their share of the row.")}
    wrong_images, labels, predicted = evaluation.mistakes
    if len(labels):
        captions = [f"pred {p} true {t}" for p, t in zip(predicted, labels)]
        pictures["misclassified"] = images.Picture(
            images.digit_grid(wrong_images, captions, highlight=[True] * len(labels)),
            f"The first {len(labels)} misclassified images of this split, in split order, "
            "drawn dark on white; the red caption \"pred P true T\" under each gives the "
            "model's prediction P and the true digit T.")
    return pictures
