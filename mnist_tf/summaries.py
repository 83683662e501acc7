"""TensorBoard summary writers, one per split, under `workdir/summaries/`."""

from __future__ import annotations

import os

import tensorflow as tf

SUMMARY_SUBDIR = "summaries"


class SummaryWriters:
    """Scalar writers for the train, validation and test splits.

    Each split is its own TensorBoard run, so `loss` and `accuracy` of all three
    appear on the same chart.
    """

    def __init__(self, workdir: str, splits=("train", "validation", "test")):
        self._writers = {
            split: tf.summary.create_file_writer(os.path.join(workdir, SUMMARY_SUBDIR, split))
            for split in splits
        }

    def scalars(self, split: str, step: int, values: dict[str, float]) -> None:
        """Writes `values` (name -> number) for `split` at `step`."""
        with self._writers[split].as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)

    def flush(self) -> None:
        """Makes everything written so far visible to TensorBoard."""
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        """Flushes and closes all writers."""
        for writer in self._writers.values():
            writer.close()
