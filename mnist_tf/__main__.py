"""`python -m mnist_tf`: lists the commands, one line each."""

import sys

COMMANDS = (
    ("train", "train (or resume) a model: python -m mnist_tf.train --config=default"),
    ("evaluate", "evaluate a run's checkpoint on test or validation, with a confusion matrix"),
    ("predict", "classify an image file or a test digit, with its ten probabilities"),
    ("export", "write a run's model as a SavedModel that serves with TensorFlow alone"),
    ("plot", "draw a run's curves and predictions (curves.png, predictions.png)"),
    ("serve", "a page on 127.0.0.1 where you draw a digit and see its ten probabilities"),
)


def main() -> int:
    """Prints the commands and how to get each one's flags; returns exit status 0."""
    print("mnist_tf: a from-scratch TensorFlow 2 trainer for MNIST.\n\nCommands:")
    for name, summary in COMMANDS:
        print(f"  python -m mnist_tf.{name:<9} {summary}")
    print("\nEach takes --helpshort (the flags people change first) and --help (all flags).")
    print("From Python or a notebook: import mnist_tf (notebooks/mnist_tf.ipynb).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
