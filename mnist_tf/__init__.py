"""mnist_tf: a from-scratch TensorFlow 2 trainer for MNIST.

The package is laid out in the order data flows through it:

  sources -> mirror -> data -> layers -> model -> losses -> optimizers ->
  schedules -> steps -> trainer -> checkpoints / summaries -> train (CLI)

From Python (a notebook), see `mnist_tf.api`:

  mnist_tf.TrainConfig(...)                          the run's settings
  mnist_tf.train_and_evaluate(config, workdir, ...)  train; returns the results dict
  mnist_tf.load(workdir) -> Classifier               .predict / .evaluate / .export

Importing the package is cheap: TensorFlow is only imported by the modules
that need it, so the command-line entry points can reject bad flags quickly.
The names above are imported on first use (PEP 562), and only
`train_and_evaluate`, `load` and `Classifier` load TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # For editors and type checkers; at run time, see __getattr__.
    from mnist_tf.api import Classifier, load, train_and_evaluate
    from mnist_tf.config import TrainConfig

# Public name -> the module defining it.
_LAZY_EXPORTS = {
    "TrainConfig": "mnist_tf.config",
    "train_and_evaluate": "mnist_tf.api",
    "load": "mnist_tf.api",
    "Classifier": "mnist_tf.api",
}
__all__ = ["Classifier", "TrainConfig", "load", "train_and_evaluate"]


def __getattr__(name: str):
    """Imports a public name on first use, so `import mnist_tf` stays free of TensorFlow."""
    module_name = _LAZY_EXPORTS.get(name)
    if module_name is None:
        # AttributeError (not ImportError) lets `from mnist_tf import cli` fall
        # back to importing the submodule.
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module_name == "mnist_tf.api":
        # TensorFlow is loaded now, with its C++ start-up lines filtered, so that
        # a notebook's own later imports (tensorflow_datasets) stay quiet too.
        importlib.import_module("mnist_tf.quiet").import_tensorflow()
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # Later lookups skip __getattr__.
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
