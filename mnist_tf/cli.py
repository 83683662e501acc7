"""Shared plumbing for the command-line entry points: quiet logs, one-line errors."""

from __future__ import annotations

import os
import sys

from absl import flags

# TensorFlow's C++ logging (oneDNN, CUDA probing) is noise for users; must be
# set before TensorFlow is imported. MNIST_TF_VERBOSE=1 keeps it.
if not os.environ.get("MNIST_TF_VERBOSE"):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXIT_USAGE = 2


def fail(message: str) -> None:
    """Prints `error: message` on one line to stderr and exits with status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parser that reports bad flags on one line with exit status 2.

    absl's default prints a multi-line message and exits 1; users get one line
    naming the flag instead.
    """
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(str(e).strip().splitlines()[0])
    return []  # Unreachable; fail() exits.
