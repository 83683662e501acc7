"""Restore, predict, classify, evaluate and export: the library behind the command-line tools.

Importing the package (or `classify`, `export`, `predict`) loads no
TensorFlow, so a tool can refuse bad input before TensorFlow's start-up.
`restore` loads it. Its names (`load_model`, `LoadedModel`,
`make_predict_fn`) are also answered here, on first use.
"""

from __future__ import annotations

_RESTORE_NAMES = ("LoadedModel", "load_model", "make_predict_fn")


def __getattr__(name: str):
    """`restore`'s names, imported (with TensorFlow) on first use."""
    if name in _RESTORE_NAMES:
        from mnist_tf.inference import restore

        return getattr(restore, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
