"""Checkpoints: `tf.train.Checkpoint` + `CheckpointManager`, with verified restores."""

from __future__ import annotations

import os

import tensorflow as tf

from mnist_tf.errors import CheckpointError
from mnist_tf.workdir import CHECKPOINT_SUBDIR


def make_manager(
    workdir: str, max_to_keep: int, **objects: tf.Module | tf.Variable
) -> tf.train.CheckpointManager:
    """Returns a manager saving `objects` under `workdir/checkpoints`."""
    checkpoint = tf.train.Checkpoint(**objects)
    return tf.train.CheckpointManager(
        checkpoint, os.path.join(workdir, CHECKPOINT_SUBDIR), max_to_keep=max_to_keep
    )


def _restore_one(manager: tf.train.CheckpointManager, path: str) -> None:
    status = manager.checkpoint.restore(path)
    status.assert_existing_objects_matched()


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# What a damaged checkpoint raises (a truncated data file: IndexError, "Read
# less bytes than requested"; a missing shard: NotFoundError; bad bytes:
# DataLossError). A checkpoint of another model raises AssertionError or
# ValueError instead, and so would every older one.
_DAMAGE = (tf.errors.OpError, IndexError)


def restore(
    manager: tf.train.CheckpointManager, path: str | None = None, log=None,
    describe: str | None = None,
) -> str | None:
    """Restores the latest (or the given) checkpoint into the manager's objects.

    Every object that exists in Python (model variables, optimizer step and
    slots, RNG state) must be matched by a value in the checkpoint, so
    optimizer state can never be silently dropped. When the latest checkpoint
    is damaged, the newest intact older one is restored instead, with a
    warning naming the damaged one (nothing is deleted).

    Args:
        manager: the manager whose checkpoint object receives the values.
        path: a checkpoint prefix; None means the manager's latest (with the
            fallback to older ones).
        log: receives the warning line (default: print).
        describe: what the checkpoint must fit, for the error message (e.g.
            "the architecture [32] recorded in W/config.json").

    Returns:
        The restored checkpoint's path, or None if there is none.

    Raises:
        CheckpointError: if the checkpoint (every one, when falling back) is
            unreadable or does not match.
    """
    log = log or print
    candidates = [path] if path else list(reversed(manager.checkpoints))
    if not candidates:
        return None
    damaged = []
    for candidate in candidates:
        try:
            _restore_one(manager, candidate)
        except _DAMAGE as e:
            damaged.append(f"{candidate} ({_first_line(e)})")
            continue
        except (ValueError, AssertionError) as e:
            raise CheckpointError(
                f"checkpoint {candidate} cannot be restored into this model: it does not fit "
                f"{describe or 'its variables'} ({_first_line(e)}); point at a checkpoint of "
                "this run, or move it away") from None
        if damaged:
            log(f"warning: checkpoint {damaged[0]} is damaged; using the newest intact "
                f"one, {candidate} (nothing is deleted; the damaged one is written afresh when "
                "the run saves that step again)")
        return candidate
    raise CheckpointError(
        f"checkpoint {damaged[0]} cannot be restored into this model"
        + (f", nor can the {len(damaged) - 1} older one(s)" if len(damaged) > 1 else "")
        + "; move the checkpoints directory away to start afresh"
    )
