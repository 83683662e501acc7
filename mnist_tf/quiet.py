"""TensorFlow's start-up and logging noise silenced for one library call, then restored.

The API (`mnist_tf.api`) runs inside someone else's process (a notebook), so
it must leave that process as it found it: `quiet()` sets
TF_CPP_MIN_LOG_LEVEL only while TensorFlow is first imported (TensorFlow reads
it then) and restores the variable, and lowers the `tensorflow` and absl
Python loggers only for the duration of the call. MNIST_TF_VERBOSE=1 keeps
all of it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile

# C++ start-up lines that ignore TF_CPP_MIN_LOG_LEVEL (logged before
# absl::InitializeLog()); anything else captured is written back to stderr.
_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} |"
    r"E\d{4} .*(cuInit|cuda|CUDA))"
)
# TensorFlow's C++ INFO and WARNING lines ("I0000 00:00:1796.41 20584 service.cc:153] ..."),
# written straight to file descriptor 2 while a call runs (XLA's start-up, tf.data).
_CPP_INFO = re.compile(r"^[IW]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\]")


def import_tensorflow() -> None:
    """Imports TensorFlow with its C++ start-up noise filtered, leaving os.environ as it was."""
    if "tensorflow" in sys.modules or os.environ.get("MNIST_TF_VERBOSE"):
        import tensorflow  # noqa: F401
        return
    had = "TF_CPP_MIN_LOG_LEVEL" in os.environ
    old = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with _filtered_stderr(_STARTUP_NOISE):
            import tensorflow as tf

            tf.config.list_logical_devices()  # Device start-up logs here.
    finally:
        if had:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = old
        else:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)


@contextlib.contextmanager
def _filtered_stderr(noise: re.Pattern):
    """Holds back what is written to file descriptor 2 in the block; writes back all but `noise`.

    C++ code writes to the descriptor itself, past Python's `sys.stderr` (in
    Jupyter, the kernel forwards the descriptor into the cell's output).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile(mode="w+b") as captured:
            os.dup2(captured.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                captured.seek(0)
                for line in captured.read().decode(errors="replace").splitlines():
                    if not noise.match(line):
                        print(line, file=sys.stderr)
    finally:
        os.close(saved)


@contextlib.contextmanager
def quiet():
    """Imports TensorFlow quietly; mutes its Python INFO logs and C++ INFO lines in the block."""
    import_tensorflow()
    if os.environ.get("MNIST_TF_VERBOSE"):
        yield
        return
    from absl import logging as absl_logging

    loggers = [logging.getLogger("tensorflow"), logging.getLogger("absl")]
    levels = [one.level for one in loggers]
    verbosity = absl_logging.get_verbosity()
    for one in loggers:
        one.setLevel(logging.WARNING)
    absl_logging.set_verbosity(absl_logging.WARNING)
    try:
        with _filtered_stderr(_CPP_INFO):
            yield
    finally:
        for one, level in zip(loggers, levels):
            one.setLevel(level)
        absl_logging.set_verbosity(verbosity)
