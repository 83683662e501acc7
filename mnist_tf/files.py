"""Small file helpers: atomic writes that leave the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator

from mnist_tf.errors import UserError


def path_problem(path: str | os.PathLike, kind: str = "directory") -> str | None:
    """Why `path` is no usable `kind` ("directory" or "file"), as a sentence's end; None if it is.

    e.g. "does not exist", "is a file, not a directory", "is a symbolic-link
    loop", "is a symbolic link to the missing /x": what a user needs to see,
    where `os.path.exists` says False for all but one of them.
    """
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic-link loop"
        if os.path.islink(path):
            return f"is a symbolic link to the missing {os.path.realpath(path)}"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):  # ENOTDIR: a parent is a file.
            return "does not exist"
        return f"cannot be read ({e.strerror})"
    if stat.S_ISDIR(mode) != (kind == "directory"):
        return "is a directory, not a file" if kind == "file" else "is a file, not a directory"
    return None


def make_directory(path: str, flag: str) -> str:
    """Creates directory `path` (and its parents) if needed; returns its absolute path.

    Args:
        path: the directory.
        flag: the flag that named it, for the one-line error.

    Raises:
        UserError: naming `flag`, if `path` is a file or cannot be created.
    """
    path = os.path.abspath(path)
    problem = path_problem(path)
    if problem and problem != "does not exist":
        raise UserError(f"{flag}: {path} {problem}")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"{flag}: cannot create {path}: {e.strerror}") from None
    return path


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


