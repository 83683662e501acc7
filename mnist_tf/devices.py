"""Device selection: --device=auto|cpu|gpu|gpu:N, and TF32 matmuls.

A run names the device it asked for and the one it got; asking for a GPU
that TensorFlow cannot see is an error, never a silent CPU run.
"""

from __future__ import annotations

from mnist_tf.choices import DEVICE_CHOICES, DEVICE_PATTERN
from mnist_tf.errors import UserError


def resolve(text: str) -> str:
    """Maps a --device value to the TensorFlow device the run uses.

    Args:
        text: auto (the first GPU if there is one, else the CPU), cpu, gpu
            (the first GPU) or gpu:N.

    Returns:
        A device name such as "/CPU:0" or "/GPU:1".

    Raises:
        UserError: if a GPU is asked for that TensorFlow does not see.
    """
    import tensorflow as tf

    if not DEVICE_PATTERN.match(text):
        raise UserError(f"--device: {text!r} is not one of {', '.join(DEVICE_CHOICES)} "
                        "(e.g. gpu:0)")
    kind, _, index = text.partition(":")
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "cpu" or (kind == "auto" and not gpus):
        return "/CPU:0"
    number = int(index or 0)
    if number >= len(gpus):
        seen = f"{len(gpus)} GPU(s)" if gpus else "no GPU"
        build = "" if tf.test.is_built_with_cuda() else " (this TensorFlow is a CPU-only build)"
        raise UserError(f"--device: {text} asked for, but TensorFlow sees {seen}{build}; "
                        "use --device=cpu or --device=auto")
    return f"/GPU:{number}"


def describe(device: str) -> str:
    """A one-line description of a resolved device, for the run's log."""
    import tensorflow as tf

    if device.startswith("/GPU"):
        details = tf.config.experimental.get_device_details(
            tf.config.list_physical_devices("GPU")[int(device.rsplit(":", 1)[1])])
        return f"{device} ({details.get('device_name', 'GPU')})"
    return f"{device} (CPU)"


def set_tensor_float_32(enabled: bool) -> None:
    """Turns TF32 matmuls/convolutions on or off (they only exist on Ampere+ GPUs)."""
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(enabled)
