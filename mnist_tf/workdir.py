"""The workdir: its layout, config.json, results.json, the lock and the resume check.

A training workdir holds:

    config.json   the run's `TrainConfig` (`write_config`, `read_config`); a
                  resumed run is checked against it (`check_resume`)
    results.json  the final metrics (`write_results`); the record of the run, which
                  a re-run of a complete run leaves as it is (`read_results`)
    reevaluation.json  such a re-run's fresh evaluation of the restored model
                  (`write_reevaluation`)
    train.lock    held while a run trains there (`lock`): the holder's pid, empty
                  when none
    checkpoints/  see mnist_tf/training/checkpoints.py
    train/, validation/, test/  TensorBoard's runs; the HParams session is in
                  the workdir itself (see mnist_tf/training/summaries.py)

Nothing here imports TensorFlow, so the entry points can check a workdir
before it loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator

from mnist_tf import files
from mnist_tf.config import FIXED, ConfigError, TrainConfig, flag_text, settings
from mnist_tf.errors import UserError

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
REEVALUATION_FILE = "reevaluation.json"
LOCK_FILE = "train.lock"
CHECKPOINT_SUBDIR = "checkpoints"  # tf.train.CheckpointManager's directory.
# Where TensorBoard's runs go: the workdir itself. HParams pairs a session (the
# directory of its hparams summary) with the scalar runs below it, so the
# session sits in the workdir and `tensorboard --logdir=runs` names the runs
# NAME/train, NAME/validation, NAME/test, and the HParams row NAME.
SUMMARY_SUBDIR = ""


def prepare(workdir: str) -> str:
    """Creates `workdir` if needed and checks that it is writable.

    Returns:
        The absolute path of the workdir.

    Raises:
        UserError: naming --workdir if it cannot be used.
    """
    workdir = files.make_directory(workdir, "--workdir")
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise UserError(f"--workdir: {workdir} is not writable; choose another --workdir")
    return workdir


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
    """Holds an exclusive lock on `workdir` for one training run.

    An OS-level `flock` on `workdir/train.lock`: the kernel releases it when the
    process ends, however it ends (SIGKILL, a crash), so a dead run never
    leaves the workdir locked. The holder's pid is written into the file for
    the error message, and removed again on release, so a run that changes
    nothing (the re-run of a complete run) leaves the file as it found it.

    Raises:
        UserError: if another live process holds the lock.
    """
    import fcntl

    path = os.path.join(workdir, LOCK_FILE)
    try:
        handle = open(path, "a+")
    except OSError as e:
        raise UserError(f"--workdir: cannot create the lock file {path}: {e.strerror}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise UserError(f"--workdir: {workdir} is in use by another training run (pid "
                            f"{holder}); wait for it to finish, or use another --workdir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)  # While still held: no other run's pid is erased.
    finally:
        handle.close()  # Closing releases the lock.


def write_config(workdir: str, config: TrainConfig) -> None:
    """Records `config` as `workdir/config.json` (atomically)."""
    files.write_json_atomic(os.path.join(workdir, CONFIG_FILE), config.to_dict())


def write_results(workdir: str, results: dict) -> None:
    """Writes `results` as `workdir/results.json` (atomically)."""
    files.write_json_atomic(os.path.join(workdir, RESULTS_FILE), results)


def read_results(workdir: str) -> dict | None:
    """The results.json a finished run wrote in `workdir`; None if missing or unreadable."""
    try:
        with open(os.path.join(workdir, RESULTS_FILE)) as f:
            results = json.load(f)
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) else None


def write_reevaluation(workdir: str, evaluation: dict) -> str:
    """Writes a re-run's fresh evaluation as `workdir/reevaluation.json` (atomically).

    Returns:
        The file's path.
    """
    path = os.path.join(workdir, REEVALUATION_FILE)
    files.write_json_atomic(path, evaluation)
    return path


def read_config(workdir: str) -> TrainConfig:
    """Reads the `TrainConfig` that `python -m mnist_tf.train` recorded in `workdir`.

    Keys that this version does not know (from older or newer versions) are
    ignored; fields missing from the file take their defaults.

    Raises:
        UserError: if the workdir holds no readable, valid config.json.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isdir(workdir):
        raise UserError(f"--workdir: {workdir} does not exist; train a model there first "
                        f"(python -m mnist_tf.train --workdir={workdir})")
    if not os.path.isfile(path):
        raise UserError(f"--workdir: {workdir} holds no trained run ({CONFIG_FILE} is missing); "
                        f"train one with python -m mnist_tf.train --workdir={workdir}")
    try:
        with open(path) as f:
            values = json.load(f)
        if not isinstance(values, dict):
            raise ValueError(f"a JSON {type(values).__name__}, not an object")
        fields = {field.name for field in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in values.items() if k in fields})
    except (OSError, ValueError, TypeError, ConfigError) as e:  # ConfigError: a refused value.
        raise UserError(f"{path} is unreadable or invalid ({e})") from None


def check_resume(workdir: str, config: TrainConfig) -> None:
    """Refuses to resume `workdir` with settings that contradict its config.json.

    Every setting declared FIXED must match the recorded one; so must the run's
    length (the RUN_LENGTH settings --epochs and --train_steps) under
    --lr_schedule=cosine, whose decay it sets. FREE settings may change. A workdir without
    config.json or without a checkpoint has trained nothing yet: nothing to check.

    Raises:
        ConfigError: naming the flag, both values and the fix, on one line.
        UserError: if config.json is unreadable or invalid.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not (os.path.exists(path) and has_checkpoint(workdir)):
        return  # Nothing trained yet (e.g. a run that diverged before its first save).
    recorded = read_config(workdir)
    for name, declared in settings().items():
        if declared.on_resume == FIXED and getattr(config, name) != getattr(recorded, name):
            raise _contradiction(name, config, recorded, path,
                                 "a resumed run keeps the settings that shaped its steps so far")
    if recorded.lr_schedule == "cosine" and _length(config) != _length(recorded):
        name = "train_steps" if config.train_steps != recorded.train_steps else "epochs"
        raise _contradiction(name, config, recorded, path,
                             "under --lr_schedule=cosine the run's length sets the decay, so "
                             "another length would re-shape the steps still to come")


def has_checkpoint(workdir: str) -> bool:
    """Whether `workdir` holds a saved checkpoint (the manager's state file lists one)."""
    return os.path.isfile(os.path.join(workdir, CHECKPOINT_SUBDIR, "checkpoint"))


def _length(config: TrainConfig) -> tuple[str, int]:
    """The run's length as its flags give it: --train_steps if set, else --epochs."""
    if config.train_steps > 0:
        return ("train_steps", config.train_steps)
    return ("epochs", config.epochs)


def _spelled(value) -> str:
    return flag_text(value) or "''"  # An empty value, as a shell would need it.


def _contradiction(name: str, config: TrainConfig, recorded: TrainConfig, path: str,
                   reason: str) -> ConfigError:
    before = _spelled(getattr(recorded, name))
    return ConfigError(name, f"{_spelled(getattr(config, name))} contradicts {before} recorded "
                             f"in {path}; {reason}: pass --{name}={before}, or use another "
                             "--workdir")
