"""Disk-full errors: one line naming what could not be written, and no litter from it.

A full disk reaches the tools in two shapes: Python's `OSError` with errno
ENOSPC (json, PIL, os) and TensorFlow's `OpError` (ResourceExhaustedError
from SaveV2, WriteFile, GFile and the summary writers) whose message reads
"PATH; No space left on device". Both are the user's to fix (free space, or
write elsewhere), so both become a `NoSpaceError`: the entry points print
it as `error: ...` and exit with status 2, like any `UserError`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator

from mnist_tf.errors import UserError

# strerror(ENOSPC), which TensorFlow's file system layer puts in its messages.
_NO_SPACE_TEXT = os.strerror(errno.ENOSPC)
# TensorFlow's op prefix, "{{function_node __wrapped__SaveV2_...}} ".
_OP_PREFIX = re.compile(r"^\{\{.*?\}\}\s*")
# The temporary names TensorFlow writes before renaming into place:
# "PREFIX_temp/part-...", "FILE.tmp<32 hex>", "FILE.tempstate<digits>".
_TEMPORARY_SUFFIX = re.compile(r"(_temp/.*|\.tmp[0-9a-f]{32}|\.tempstate\d+)$")


class NoSpaceError(UserError):
    """The disk filled up while a tool wrote its output."""


def is_no_space(error: BaseException) -> bool:
    """Whether `error` says the device ran out of space (Python's or TensorFlow's form)."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    return _NO_SPACE_TEXT in str(error)


def path_in(error: BaseException) -> str | None:
    """The path a disk-full `error` names, as the user knows it (None if it names none).

    TensorFlow names the temporary file it was writing; that name is mapped
    back to the file or checkpoint prefix it would have become.
    """
    if isinstance(error, OSError):
        return os.fsdecode(error.filename) if error.filename else None
    first_line = (str(error).strip().splitlines() or [""])[0]
    head, found, _ = _OP_PREFIX.sub("", first_line).partition(f"; {_NO_SPACE_TEXT}")
    if not found or not head:
        return None
    return _TEMPORARY_SUFFIX.sub("", head)


def message(path: str | None, fix: str) -> str:
    """The one-line disk-full message: what could not be written, and `fix`."""
    where = f" writing {path}" if path else ""
    return f"no space left on device{where}; {fix}"


@contextlib.contextmanager
def writing(path: str, fix: str, created_in: str | None = None) -> Iterator[None]:
    """Turns a disk-full error inside the block into a `NoSpaceError` naming `path`.

    Args:
        path: what the block writes (a file, directory or checkpoint prefix),
            named in the message.
        fix: the advice that ends the message, e.g. "free space or use
            another --workdir".
        created_in: a directory the block writes into. On any error, the
            entries the block created there are removed (a failed checkpoint
            save leaves its `ckpt-N_temp/`), and the directory itself if the
            block created it; what was there before is never touched. The
            block must be the directory's only writer (a workdir is locked).

    Raises:
        NoSpaceError: for a disk-full error; any other error propagates as is.
    """
    existed = created_in is not None and os.path.isdir(created_in)
    before = set(os.listdir(created_in)) if existed else set()
    try:
        yield
    except BaseException as e:
        if created_in is not None:
            _remove_created(created_in, existed, before)
        if isinstance(e, Exception) and is_no_space(e):
            raise NoSpaceError(message(path, fix)) from None
        raise


def _remove_created(directory: str, existed: bool, before: set[str]) -> None:
    """Removes what appeared in `directory` since `before` was listed (all of it if it is new)."""
    if not os.path.isdir(directory):
        return
    if not existed:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for name in set(os.listdir(directory)) - before:
        entry = os.path.join(directory, name)
        if os.path.isdir(entry) and not os.path.islink(entry):
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(entry)
