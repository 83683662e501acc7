"""Small file helpers: atomic JSON writes."""

from __future__ import annotations

import json
import os
import tempfile


def write_json_atomic(path: str | os.PathLike, value) -> None:
    """Writes `value` as JSON to `path` via a temporary file and a rename.

    Readers see either the old file or the complete new one, never a partial
    write, even if the process dies mid-way.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
