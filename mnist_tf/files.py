"""Small file helpers: the workdir check and atomic writes."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator

from mnist_tf.errors import UserError


def prepare_workdir(workdir: str) -> str:
    """Creates `workdir` if needed and checks that it is writable.

    Returns:
        The absolute path of the workdir.

    Raises:
        UserError: naming --workdir if it cannot be used.
    """
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UserError(f"--workdir: {workdir} is a file, not a directory")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise UserError(f"--workdir: cannot create {workdir}: {e.strerror}") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise UserError(f"--workdir: {workdir} is not writable; choose another --workdir")
    return workdir


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_readable(path: str) -> None:
    """Gives a temporary file the mode a plain open() would have (mkstemp makes it 0600)."""
    os.chmod(path, 0o666 & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside `path`; renames it onto `path` if the block succeeds.

    Readers see either the old file or the complete new one, never a partial
    write, even if the process dies mid-way; on an error the temporary file is
    removed and `path` is untouched.

    Args:
        path: the file to (re)place.
        suffix: ending of the temporary name (some writers pick a format by it).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix,
                               dir=directory)
    os.close(fd)
    try:
        yield tmp
        make_readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, value) -> None:
    """Writes `value` as JSON to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


LOCK_FILE = "train.lock"


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
    """Holds an exclusive lock on `workdir` for one training run.

    An OS-level `flock` on `workdir/train.lock`: the kernel releases it when the
    process ends, however it ends (SIGKILL, a crash), so a dead run never
    leaves the workdir locked. The holder's pid is written into the file for
    the error message.

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
        yield
    finally:
        handle.close()  # Closing releases the lock.
