"""mnist_tf: a from-scratch TensorFlow 2 trainer for MNIST.

The package is laid out in the order data flows through it:

  sources -> mirror -> data -> layers -> model -> losses -> optimizers ->
  schedules -> steps -> trainer -> checkpoints / summaries -> train (CLI)

Importing the package is cheap: TensorFlow is only imported by the modules
that need it, so the command-line entry points can reject bad flags quickly.
"""

__version__ = "0.1.0"
