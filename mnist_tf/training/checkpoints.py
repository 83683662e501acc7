"""Checkpoints: `tf.train.Checkpoint` + `CheckpointManager`, with verified restores.

Restores find the checkpoints from their files (`workdir.checkpoint_paths`),
never from the manager's state file alone: a damaged state file must not make
a run start again from step 0 over intact checkpoints, and a reader must not
depend on a file the trainer rewrites at every save.
"""

from __future__ import annotations

import contextlib
import os
import re

import tensorflow as tf

from mnist_tf import disk, files
from mnist_tf import workdir as workdirs
from mnist_tf.errors import CheckpointError
from mnist_tf.workdir import CHECKPOINT_SUBDIR

# The checkpoint's key of the run's configuration (`workdir.config_text`), a
# string variable saved with the weights, so the resume check travels with them.
CONFIG_KEY = "config"
_CONFIG_TENSOR = f"{CONFIG_KEY}/.ATTRIBUTES/VARIABLE_VALUE"
STATE_FILE = "checkpoint"  # tf.train.CheckpointManager's state file.
# How often a reader lists the checkpoints again when the one it was reading
# was deleted under it (a live run's rotation): each time there is a newer one.
_MAX_RELISTS = 20
_STATE_LINE = re.compile(r'^(model_checkpoint_path|all_model_checkpoint_paths): "([^"]+)"$')


def make_manager(workdir: str, max_to_keep: int, log=None,
                 **objects: tf.Module | tf.Variable) -> tf.train.CheckpointManager:
    """Returns a manager saving `objects` under `workdir/checkpoints`.

    A state file that does not name the newest checkpoint on disk (damaged,
    emptied, or deleted) is rebuilt from the files first, with a warning
    (`log`), so the manager rotates and reports the real checkpoints. Only a
    run that holds the workdir's lock calls this.
    """
    directory = os.path.join(workdir, CHECKPOINT_SUBDIR)
    problem = state_file_problem(workdir)
    if problem:
        _rewrite_state_file(directory, workdirs.checkpoint_paths(workdir))
        (log or print)(f"warning: {os.path.join(directory, STATE_FILE)} {problem}; rebuilt it "
                       "from the checkpoint files")
    return tf.train.CheckpointManager(tf.train.Checkpoint(**objects), directory,
                                      max_to_keep=max_to_keep)


def save_best(checkpoint: tf.train.Checkpoint, workdir: str, step: int) -> str:
    """Saves `checkpoint` as the best one, `workdir/checkpoints/best/ckpt-<step>`; returns it.

    The best checkpoint (`--keep_best`) is a whole training state, as the
    rolling ones are: `--checkpoint=best` restores it through the same
    restore, and a run killed after writing a new best resumes from it. The
    new one is complete before the one it replaces is deleted (`prune_best`).
    """
    directory = os.path.join(workdir, workdirs.BEST_SUBDIR)
    path = os.path.join(directory, f"ckpt-{step}")
    with disk.writing(path, "free space or use another --workdir", created_in=directory):
        os.makedirs(directory, exist_ok=True)
        checkpoint.write(path)
    prune_best(workdir, step)
    return path


def prune_best(workdir: str, step: int) -> list[str]:
    """Deletes the best checkpoints other than `ckpt-<step>` (-1: all); returns those deleted.

    Also after a run killed between writing a new best and deleting the one
    it replaced, or resumed from a checkpoint older than its newest best: the
    restored record decides. The state file `checkpoint` then names what is
    kept (for `tf.train.latest_checkpoint`). Only a run that holds the
    workdir's lock calls this.
    """
    directory = os.path.join(workdir, workdirs.BEST_SUBDIR)
    found = workdirs.best_checkpoint_paths(workdir)
    stale = [path for path in found if workdirs.checkpoint_step(path) != step]
    for path in stale:
        os.remove(path + ".index")  # First: a half-deleted checkpoint is no longer listed.
        prefix = os.path.basename(path) + ".data-"
        for name in os.listdir(directory):
            if name.startswith(prefix):
                os.remove(os.path.join(directory, name))
    kept = [path for path in found if path not in stale]
    if kept:
        _rewrite_state_file(directory, kept)
    elif stale:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(directory, STATE_FILE))
    return stale


def state_file_problem(workdir: str) -> str | None:
    """What is wrong with the manager's state file, given the checkpoint files; None if sound."""
    found = workdirs.checkpoint_paths(workdir)
    if not found:
        return None
    path = os.path.join(workdir, CHECKPOINT_SUBDIR, STATE_FILE)
    try:
        with open(path) as f:
            lines = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return "is missing"
    except (OSError, UnicodeDecodeError) as e:
        return f"is unreadable ({e})"
    parsed = [_STATE_LINE.match(line) for line in lines]
    latest = [m.group(2) for m in parsed if m and m.group(1) == "model_checkpoint_path"]
    if not lines or not latest:
        return "is empty or damaged"
    if os.path.basename(latest[0]) != os.path.basename(found[0]):
        return (f"names {latest[0]}, not the newest checkpoint on disk "
                f"{os.path.basename(found[0])}")
    return None


def _rewrite_state_file(directory: str, found: list[str]) -> None:
    """Writes the state file naming `found` (newest first), as TensorFlow writes it.

    With a timestamp per checkpoint (its index file's time) later than the
    last preserved one: `tf.train.CheckpointManager` rotates only the
    checkpoints whose timestamps are, and would keep the others forever.
    """
    paths = list(reversed(found))  # Oldest first, as TF writes.
    names = [os.path.basename(path) for path in paths]
    times = [os.path.getmtime(path + ".index") for path in paths]
    text = (f'model_checkpoint_path: "{names[-1]}"\n'
            + "".join(f'all_model_checkpoint_paths: "{name}"\n' for name in names)
            + "".join(f"all_model_checkpoint_timestamps: {t!r}\n" for t in times)
            + f"last_preserved_timestamp: {min(times) - 1.0!r}\n")
    with files.atomic_path(os.path.join(directory, STATE_FILE)) as tmp, open(tmp, "w") as f:
        f.write(text)


def carried_config(path: str) -> str | None:
    """The configuration text checkpoint `path` carries; None for one saved without it.

    Raises:
        What a damaged or vanished checkpoint raises (`DAMAGE`).
    """
    reader = tf.train.load_checkpoint(path)
    if not reader.has_tensor(_CONFIG_TENSOR):
        return None
    value = reader.get_tensor(_CONFIG_TENSOR)
    return value.decode() if isinstance(value, bytes) else str(value)


def _restore_one(objects: dict, path: str) -> None:
    # The carried configuration is read (`carried_config`), never restored: the
    # run's own stays in the state, to be saved with its next checkpoint.
    objects = {key: value for key, value in objects.items() if key != CONFIG_KEY}
    status = tf.train.Checkpoint(**objects).restore(path)
    status.assert_existing_objects_matched()
    status.expect_partial()  # The configuration and save counter stay unread, on purpose.


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# What a damaged checkpoint raises (a truncated data file: IndexError, "Read
# less bytes than requested"; a missing shard: NotFoundError; bad bytes:
# DataLossError). A checkpoint of another model raises AssertionError or
# ValueError instead, and so would every older one.
DAMAGE = (tf.errors.OpError, IndexError)


def _vanished(path: str) -> bool:
    return not os.path.exists(path + ".index")


def restore(objects: dict, workdir: str, path: str | None = None, log=None,
            describe: str | None = None) -> str | None:
    """Restores the newest (or the given) checkpoint of `workdir` into `objects`.

    Every object that exists in Python (model variables, optimizer step and
    slots, RNG state) must be matched by a value in the checkpoint, so
    optimizer state can never be silently dropped. When the newest checkpoint
    is damaged, the newest intact older one is restored instead, with a
    warning naming the damaged one (nothing is deleted). A checkpoint deleted
    while it was read (a live run's rotation) is not damaged: the checkpoints
    are listed again and the newest one read.

    Args:
        objects: the checkpoint's objects by key (`state.checkpoint_objects`).
        workdir: the run's workdir.
        path: a checkpoint prefix; None means the newest (with the fallback).
        log: receives the warning line (default: print).
        describe: what the checkpoint must fit, for the error message (e.g.
            "the architecture [32] recorded in W/config.json").

    Returns:
        The restored checkpoint's path, or None if there is none.

    Raises:
        CheckpointError: if the checkpoint (every one, when falling back) is
            unreadable or does not match, or the named one is gone.
    """
    log = log or print
    listed = (lambda: [path]) if path else (lambda: workdirs.checkpoint_paths(workdir))
    tried, damaged = set(), []
    for _ in range(_MAX_RELISTS):
        fresh = [candidate for candidate in listed() if candidate not in tried]
        for candidate in fresh:
            tried.add(candidate)
            try:
                _restore_one(objects, candidate)
            except DAMAGE as e:
                if _vanished(candidate):
                    break  # Rotated away while read: list again.
                damaged.append(f"{candidate} ({_first_line(e)})")
                continue
            except (ValueError, AssertionError) as e:
                raise CheckpointError(
                    f"checkpoint {candidate} cannot be restored into this model: it does not "
                    f"fit {describe or 'its variables'} ({_first_line(e)}); point at a "
                    "checkpoint of this run, or move it away") from None
            if damaged:
                log(f"warning: checkpoint {damaged[0]} is damaged; using the newest intact "
                    f"one, {candidate} (nothing is deleted; the damaged one is written afresh "
                    "when the run saves that step again)")
            return candidate
        else:
            break  # Every listed checkpoint was tried.
    if not tried:
        return None
    raise _unrestorable(workdir, path, damaged)


def _unrestorable(workdir: str, path: str | None, damaged: list[str]) -> CheckpointError:
    """The error when no checkpoint could be restored: damaged ones, or ones rotated away."""
    holder = workdirs.lock_holder(workdir)
    live = (f"; a training run (pid {holder}) is writing this workdir: try again, or once it "
            "has finished" if holder else "")
    if path and _vanished(path):
        return CheckpointError(
            f"--checkpoint: {path} no longer exists (a run keeps only its newest "
            f"--keep_checkpoints){live}; name one that exists, or leave --checkpoint out for "
            "the newest")
    if not damaged:
        return CheckpointError(f"the checkpoints in {os.path.join(workdir, CHECKPOINT_SUBDIR)} "
                               f"kept being replaced while they were read{live}")
    fix = live or "; move the checkpoints directory away to start afresh"
    return CheckpointError(
        f"checkpoint {damaged[0]} cannot be restored into this model"
        + (f", nor can the {len(damaged) - 1} older one(s)" if len(damaged) > 1 else "") + fix)
