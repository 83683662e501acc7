"""Checkpoints: `tf.train.Checkpoint` + `CheckpointManager`, with verified restores."""

from __future__ import annotations

import os

import tensorflow as tf

from mnist_tf.errors import CheckpointError

CHECKPOINT_SUBDIR = "checkpoints"


def make_manager(
    workdir: str, max_to_keep: int, **objects: tf.Module | tf.Variable
) -> tf.train.CheckpointManager:
    """Returns a manager saving `objects` under `workdir/checkpoints`."""
    checkpoint = tf.train.Checkpoint(**objects)
    return tf.train.CheckpointManager(
        checkpoint, os.path.join(workdir, CHECKPOINT_SUBDIR), max_to_keep=max_to_keep
    )


def restore(manager: tf.train.CheckpointManager, path: str | None = None) -> str | None:
    """Restores the latest (or the given) checkpoint into the manager's objects.

    Every object that exists in Python (model variables, optimizer step and
    slots, RNG state) must be matched by a value in the checkpoint, so
    optimizer state can never be silently dropped.

    Args:
        manager: the manager whose checkpoint object receives the values.
        path: a checkpoint prefix; None means the manager's latest.

    Returns:
        The restored checkpoint's path, or None if there is none.

    Raises:
        CheckpointError: if the checkpoint is unreadable or does not match.
    """
    path = path or manager.latest_checkpoint
    if path is None:
        return None
    try:
        status = manager.checkpoint.restore(path)
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:
        # IndexError: a truncated data file ("Read less bytes than requested").
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f"checkpoint {path} cannot be restored into this model: {first_line}"
        ) from None
    return path
