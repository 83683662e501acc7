"""Shared plumbing for the command-line entry points: quiet logs, one-line errors."""

from __future__ import annotations

import os
import re
import sys
import tempfile

from absl import app, flags

# TensorFlow's C++ logging (oneDNN, CUDA probing) is noise for users; must be
# set before TensorFlow is imported. MNIST_TF_VERBOSE=1 keeps it.
VERBOSE = bool(os.environ.get("MNIST_TF_VERBOSE"))
if not VERBOSE:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXIT_USAGE = 2
# C++ log lines TensorFlow prints at start-up. Messages logged before
# absl::InitializeLog() ignore TF_CPP_MIN_LOG_LEVEL (abseil-cpp#1718), so they
# are filtered here instead; anything else is passed through.
_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} |"
    r"E\d{4} .*(cuInit|cuda|CUDA))"
)


def import_tensorflow_quietly(setup=None):
    """Imports TensorFlow and initialises its devices without the C++ start-up noise.

    File descriptor 2 is captured while TensorFlow loads and probes for GPUs;
    lines that are not known noise are written back to stderr afterwards, so
    real errors stay visible.

    Args:
        setup: if given, called after the import and before TensorFlow's
            runtime starts (logical devices and collective ops can only be
            configured then); its UserError propagates.

    Returns:
        The `tensorflow` module.
    """
    if VERBOSE:
        import tensorflow as tf

        if setup is not None:
            setup()
        return tf
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            if setup is not None:
                setup()
            tf.config.list_logical_devices()  # Device start-up logs here (cuInit).
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if not _STARTUP_NOISE.match(line):
                    print(line, file=sys.stderr)
    return tf


def define_data_flags() -> None:
    """Defines --data_dir, --manual_dir and --download (see mnist_tf.data.sources).

    Called only from entry points' define_*_flags functions.
    """
    flags.DEFINE_string("data_dir", None,
                        "TFDS data directory (default: $TFDS_DATA_DIR, else TFDS's default).")
    flags.DEFINE_string("manual_dir", None,
                        "Directory holding the four official MNIST IDX .gz files, used when "
                        "no prepared copy exists and TFDS cannot download.")
    flags.DEFINE_boolean("download", True,
                         "Allow TFDS's own download (tried only if its host answers a quick "
                         "probe).")


def fail(message: str) -> None:
    """Prints `error: message` on one line to stderr and exits with status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def parse_flags(argv: list[str]) -> list[str]:
    """Parses flags with absl, reporting bad flags on one line with exit status 2.

    absl's default prints a multi-line message and exits 1; users get one line
    naming the flag instead.
    """
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(str(e).strip().splitlines()[0])
    return []  # Unreachable; fail() exits.


def run(main) -> None:
    """Runs an entry point's `main` under absl (flags parsed by `parse_flags`), then exits.

    The exit skips the interpreter's own shutdown with `os._exit`: once
    TensorFlow is loaded, tearing down its thousands of modules and objects
    takes 1.2-1.5 s on 2 cores (measured: `import tensorflow` then exit) and
    does nothing a finished command needs. Every output the tools write is
    complete by then (written, fsync'ed or closed, renamed), summary writers
    are closed by the code that opened them, and the standard streams are
    flushed here. Exceptions other than SystemExit (bugs) take the normal
    path, traceback included.
    """
    try:
        app.run(main, flags_parser=parse_flags)
        status = 0
    except SystemExit as e:
        status = e.code
    if status is None:
        status = 0
    elif not isinstance(status, int):  # sys.exit("message"): printed, status 1.
        print(status, file=sys.stderr)
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
