"""The workdir: its layout, who owns it, config.json, results.json, the lock, the resume check.

This docstring is the one description of a workdir's layout; the docs link here.

Written by training (`python -m mnist_tf.train`, `mnist_tf.train_and_evaluate`):

    config.json        the run's `TrainConfig` (`write_config`, `read_config`),
                       marked with `FORMAT_KEY`: the mark that makes a directory
                       mnist_tf's (`claim`); a resumed run is checked against the
                       configuration its checkpoint carries, or this file
                       (`check_resume`)
    results.json       the final metrics (`write_results`); the record of the
                       run, which a re-run of a complete run leaves as it is
                       (`read_results`)
    reevaluation.json  such a re-run's fresh evaluation of the restored model
                       (`write_reevaluation`); nothing else is rewritten
    train.lock         held (flock) while a run trains there (`lock`): the
                       holder's pid, empty when none (`lock_holder`); the OS
                       releases it however the run ends
    checkpoints/       ckpt-N.index and ckpt-N.data-*, found from the files
                       themselves (`checkpoint_paths`), and
                       tf.train.CheckpointManager's state file `checkpoint`; see
                       mnist_tf/training/checkpoints.py
    checkpoints/best/  with --keep_best: one ckpt-N (the step of the best
                       validation value so far) and its own state file
                       `checkpoint`, apart from the rolling ones, which never
                       delete it (`best_checkpoint_paths`); --checkpoint=best
    train/, validation/, test/
                       TensorBoard's runs (scalars, images, histograms); the
                       HParams session and the layer table are event files in the
                       workdir itself (see mnist_tf/training/summaries.py)

Added by the tools, never by training (see mnist_tf/inference/evaluate.py and
mnist_tf/plot.py):

    eval.json, eval_validation.json
                       `python -m mnist_tf.evaluate`: loss, accuracy, per-class
                       precision and recall, confusion matrix of the split
    confusion_matrix_test.png, confusion_matrix_validation.png
                       the same evaluation's confusion matrix
    eval/              TensorBoard: that confusion matrix at the checkpoint's step
    curves.png, predictions.png
                       `python -m mnist_tf.plot` (unless --output_dir names another
                       directory)

Training writes only into a directory that is absent, empty, or already
mnist_tf's; it never replaces a file it did not write. Nothing here imports
TensorFlow, so the entry points can check a workdir before it loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Iterator

from mnist_tf import files
from mnist_tf.config import FIXED, ConfigError, TrainConfig, flag_text, settings
from mnist_tf.errors import UserError

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
REEVALUATION_FILE = "reevaluation.json"
LOCK_FILE = "train.lock"
CHECKPOINT_SUBDIR = "checkpoints"  # tf.train.CheckpointManager's directory.
# The best checkpoint's directory (--keep_best), inside the rolling ones'.
BEST_SUBDIR = os.path.join(CHECKPOINT_SUBDIR, "best")
# Where TensorBoard's runs go: the workdir itself. HParams pairs a session (the
# directory of its hparams summary) with the scalar runs below it, so the
# session sits in the workdir and `tensorboard --logdir=runs` names the runs
# NAME/train, NAME/validation, NAME/test, and the HParams row NAME.
SUMMARY_SUBDIR = ""
# The key that marks a config.json as written by mnist_tf, and its value.
# config.json files written before the mark have none; they are recognised by
# the architecture every version recorded (`_is_ours`).
FORMAT_KEY = "format"
FORMAT = "mnist_tf.TrainConfig/1"
_CHECKPOINT_INDEX = re.compile(r"^ckpt-(\d+)\.index$")


def prepare(workdir: str) -> str:
    """Creates `workdir` if needed, checks that it is writable and that training may write there.

    Training writes config.json, results.json and its summaries into the
    workdir, so it claims only a directory that is absent, empty (but for a
    lock file) or mnist_tf's own (`claim`); anything else is refused before a
    file is touched.

    Returns:
        The absolute path of the workdir.

    Raises:
        UserError: naming --workdir if it cannot be used.
    """
    claim(workdir)
    workdir = files.make_directory(workdir, "--workdir")
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise UserError(f"--workdir: {workdir} is not writable; choose another --workdir")
    return workdir


def claim(workdir: str) -> None:
    """Refuses a `workdir` that holds files mnist_tf did not write.

    A directory is mnist_tf's when its config.json carries the mark
    (`FORMAT_KEY`) or it holds checkpoints (`checkpoint_paths`); then training
    resumes or starts there. Otherwise it must be absent or empty (but for a
    lock file, or a config.json being written), since training would replace
    a config.json or results.json it finds.

    Raises:
        UserError: naming the directory, what is in it and the fix.
    """
    path = os.path.abspath(workdir)
    if not os.path.isdir(path):
        return  # Absent (created by `prepare`), or a file (refused there).
    try:
        entries = sorted(name for name in os.listdir(path)
                         if name != LOCK_FILE and not _partial_config(name))
    except OSError as e:
        raise UserError(f"--workdir: cannot read {path}: {e.strerror}") from None
    if not entries or checkpoint_paths(path) or _marked(path):
        return
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    raise UserError(f"--workdir: {path} holds files mnist_tf did not write ({shown}) and no "
                    f"mnist_tf run; training would overwrite its {CONFIG_FILE} and "
                    f"{RESULTS_FILE}, so nothing was touched: use a new or empty --workdir")


def _partial_config(name: str) -> bool:
    """Whether `name` is a config.json being written (`files.atomic_path`), or left by a kill."""
    return name.startswith(f".{CONFIG_FILE}.")


def _marked(workdir: str) -> bool:
    """Whether `workdir/config.json` is a JSON object mnist_tf wrote (however old)."""
    try:
        with open(os.path.join(workdir, CONFIG_FILE)) as f:
            return _is_ours(json.load(f))
    except (OSError, ValueError):
        return False


def _is_ours(values) -> bool:
    """Whether parsed config.json `values` are mnist_tf's: marked, or recording an architecture."""
    if not isinstance(values, dict):
        return False
    if FORMAT_KEY in values:
        return values[FORMAT_KEY] == FORMAT
    return "hidden_sizes" in values  # Written before the mark; every version recorded it.


def lock_holder(workdir: str) -> int | None:
    """The pid of the live training run that holds `workdir`'s lock, or None.

    Read without taking the lock (a reader must never block the trainer): the
    holder writes its pid into the lock file and empties it on release; a pid
    left by a killed run is not alive and does not count.
    """
    try:
        with open(os.path.join(workdir, LOCK_FILE)) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # Alive, another user's.
    return pid


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


def config_text(config: TrainConfig) -> str:
    """`config` as a checkpoint carries it: the marked JSON object config.json holds."""
    return json.dumps(_config_values(config), sort_keys=True)


def _config_values(config: TrainConfig) -> dict:
    return {FORMAT_KEY: FORMAT, **config.to_dict()}


def parse_config(text: str, source: str) -> TrainConfig:
    """Parses `config_text` output (or an unmarked config.json of an earlier version).

    Keys that this version does not know (from older or newer versions) are
    ignored; fields missing from the text take their defaults.

    Args:
        text: the JSON text.
        source: where it came from, for the message.

    Raises:
        UserError: if it is not a valid mnist_tf configuration.
    """
    try:
        values = json.loads(text)
        if not isinstance(values, dict):
            raise ValueError(f"a JSON {type(values).__name__}, not an object")
        if not _is_ours(values):
            raise ValueError(f"not a configuration written by mnist_tf (no {FORMAT_KEY!r}: "
                             f"{FORMAT!r})")
        fields = {field.name for field in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in values.items() if k in fields})
    except (ValueError, TypeError, ConfigError) as e:  # ConfigError: a refused value.
        raise UserError(f"{source} is unreadable or invalid ({e})") from None


def write_config(workdir: str, config: TrainConfig) -> None:
    """Records `config` as `workdir/config.json` (atomically), marked as mnist_tf's."""
    files.write_json_atomic(os.path.join(workdir, CONFIG_FILE), _config_values(config))


def write_results(workdir: str, results: dict) -> None:
    """Writes `results` as `workdir/results.json` (atomically)."""
    files.write_json_atomic(os.path.join(workdir, RESULTS_FILE), results)


# The results.json values a re-run reads back and prints: required, and optional.
_REQUIRED_RESULTS = ("global_step", "test_accuracy", "test_loss")
_OPTIONAL_RESULTS = ("validation_accuracy", "validation_loss", "train_examples_per_second",
                     "wall_seconds")


def read_results(workdir: str) -> dict | None:
    """The results.json a finished run wrote in `workdir`; None if missing or unreadable.

    Raises:
        UserError: naming the file and the key, for a value that is read back
            but is not a number (a hand edit): the file is left as it is.
    """
    path = os.path.join(workdir, RESULTS_FILE)
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict):
        return None
    for key in (*_REQUIRED_RESULTS, *_OPTIONAL_RESULTS):
        value = results.get(key)
        if value is None and key in _OPTIONAL_RESULTS:
            continue
        kinds = int if key == "global_step" else (int, float)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise UserError(f"{path}: {key} must be a number, got {value!r}; restore the "
                            "value the run wrote, or use another --workdir")
    return results


def write_reevaluation(workdir: str, evaluation: dict) -> str:
    """Writes a re-run's fresh evaluation as `workdir/reevaluation.json` (atomically).

    Returns:
        The file's path.
    """
    path = os.path.join(workdir, REEVALUATION_FILE)
    files.write_json_atomic(path, evaluation)
    return path


def check_is_directory(workdir: str) -> None:
    """Raises `read_config`'s one-line error if `workdir` is missing or not a directory.

    Cheap and TensorFlow-free, so readers can refuse a mistyped --workdir
    before TensorFlow's start-up; a directory without a run is left to the
    restore, which says what it lacks.
    """
    if files.path_problem(workdir):
        read_config(workdir)


def read_config(workdir: str) -> TrainConfig:
    """Reads the `TrainConfig` that `python -m mnist_tf.train` recorded in `workdir`.

    Raises:
        UserError: if `workdir` is not a directory, or holds no readable, valid
            config.json written by mnist_tf.
    """
    problem = files.path_problem(workdir)
    if problem == "does not exist":
        raise UserError(f"--workdir: {workdir} does not exist; train a model there first "
                        f"(python -m mnist_tf.train --workdir={workdir})")
    if problem:
        raise UserError(f"--workdir: {workdir} {problem}; pass the directory a training run "
                        f"wrote, which holds {CONFIG_FILE} and {CHECKPOINT_SUBDIR}/")
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise UserError(f"--workdir: {workdir} holds no trained run ({CONFIG_FILE} is missing); "
                        f"train one with python -m mnist_tf.train --workdir={workdir}")
    try:
        with open(path) as f:
            text = f.read()
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is unreadable or invalid ({e})") from None
    return parse_config(text, path)


def check_resume(workdir: str, config: TrainConfig, recorded: TrainConfig | None = None,
                 source: str | None = None) -> None:
    """Refuses to resume `workdir` with settings that contradict its recorded configuration.

    Every setting declared FIXED must match the recorded one; so must the run's
    length (the RUN_LENGTH settings --epochs and --train_steps) under
    --lr_schedule=cosine, whose decay it sets. FREE settings may change. A
    workdir without a checkpoint has trained nothing yet: nothing to check.

    Args:
        workdir: the workdir.
        config: the configuration of the run about to start.
        recorded: the configuration that trained the checkpoints (the one the
            newest checkpoint carries, `training.state.recorded_config`); None:
            config.json's, if there is one (the check before TensorFlow loads).
        source: where `recorded` came from, for the message.

    Raises:
        ConfigError: naming the flag, both values and the fix, on one line.
        UserError: if config.json is unreadable or invalid, or checkpoints
            exist without any record of their configuration.
    """
    if recorded is None:
        if not all_checkpoint_paths(workdir):
            return  # Nothing trained yet (e.g. a run that diverged before its first save).
        source = os.path.join(workdir, CONFIG_FILE)
        if not os.path.exists(source):
            return  # The checkpoints carry theirs: the trainer checks against that.
        recorded = read_config(workdir)
    for name, declared in settings().items():
        if declared.on_resume == FIXED and getattr(config, name) != getattr(recorded, name):
            raise _contradiction(name, config, recorded, source,
                                 "a resumed run keeps the settings that shaped its steps so far")
    if recorded.lr_schedule == "cosine" and _length(config) != _length(recorded):
        name = "train_steps" if config.train_steps != recorded.train_steps else "epochs"
        raise _contradiction(name, config, recorded, source,
                             "under --lr_schedule=cosine the run's length sets the decay, so "
                             "another length would re-shape the steps still to come")


def unrecorded_checkpoints(workdir: str) -> UserError:
    """The error for checkpoints whose configuration is recorded nowhere (no config.json)."""
    return UserError(
        f"--workdir: {workdir} holds checkpoints but no record of the settings that trained "
        f"them ({CONFIG_FILE} is missing and the checkpoints carry none), so a resume could "
        f"not be checked; put the run's {CONFIG_FILE} back, or use another --workdir")


def checkpoint_paths(workdir: str) -> list[str]:
    """The checkpoint prefixes in `workdir/checkpoints`, newest (highest step) first.

    Found from the files themselves (`ckpt-N.index`), not from the manager's
    state file, which a crash or a hand edit may have damaged. A checkpoint
    still being written has no index at its final name yet.
    """
    return _checkpoints_in(os.path.join(workdir, CHECKPOINT_SUBDIR))


def best_checkpoint_paths(workdir: str) -> list[str]:
    """The best checkpoints in `workdir/checkpoints/best` (--keep_best), newest first.

    One, but for a run killed between writing a new best and deleting the
    one it replaces: then the newest is the best (its run resumes from it).
    """
    return _checkpoints_in(os.path.join(workdir, BEST_SUBDIR))


def all_checkpoint_paths(workdir: str) -> list[str]:
    """The rolling and the best checkpoints together, newest first (the rolling one on a tie).

    Either kind records the run's configuration and may be the newest state
    (a run killed after a new best and before its next rolling checkpoint).
    """
    return sorted(checkpoint_paths(workdir) + best_checkpoint_paths(workdir),
                  key=checkpoint_step, reverse=True)


def checkpoint_step(path: str) -> int:
    """The step of checkpoint prefix `.../ckpt-N`."""
    return int(os.path.basename(path).rsplit("-", 1)[1])


def _checkpoints_in(directory: str) -> list[str]:
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    steps = sorted((int(m.group(1)) for m in map(_CHECKPOINT_INDEX.match, names) if m),
                   reverse=True)
    return [os.path.join(directory, f"ckpt-{step}") for step in steps]


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
