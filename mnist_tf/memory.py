"""The memory a training run needs, checked against the machine's before the run starts.

Without the check, a run too large for the machine fails inside TensorFlow
with a ResourceExhaustedError of forty lines (or is killed by the kernel),
after the workdir's config.json is written. The estimate is deliberately
simple and meant to err low (it counts what a run cannot do without, and
none of TensorFlow's own overhead), so that a run that fits is never refused.
"""

from __future__ import annotations

import os

from mnist_tf.choices import COMPUTE_DTYPES
from mnist_tf.constants import NUM_CLASSES, NUM_PIXELS
from mnist_tf.errors import UserError

_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# float32 copies of every parameter: the weights, Adam's two slots, the gradients.
_COPIES = {"weights": 1, "Adam's slots": 2, "gradients": 1}
# Where cgroups (v2, v1) state a container's memory limit.
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
_GIB = 2 ** 30


def num_parameters(hidden_sizes: tuple[int, ...]) -> int:
    """Weights and biases of the MLP 784 -> hidden_sizes -> 10."""
    widths = [NUM_PIXELS, *hidden_sizes, NUM_CLASSES]
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(widths, widths[1:]))


def estimate(config) -> dict[str, int]:
    """The bytes a run of `config` needs at least, by what they hold.

    With P parameters, R copies of each (--cpu_replicas under
    --distribution=mirrored: each logical CPU holds its own), c bytes per
    element of the compute dtype (4 for float32, 2 for the mixed
    precisions) and W = 784 + sum(hidden_sizes) + 10 values per example
    (the input and every layer's output):

    * weights, Adam's slots, gradients (and the EMA weights with --ema_decay):
      4 bytes x P x R each, Adam's slots twice;
    * train batch: batch_size x W x c x 3 (each value, its gradient, and one
      temporary);
    * eval batch: eval_batch_size x (784 + W x c x 2) (the uint8 images,
      padded to the full batch, then each value and one temporary).

    The data, TensorFlow's runtime and XLA's buffers come on top, uncounted.

    Args:
        config: a `TrainConfig`.

    Returns:
        Bytes by part, in the order above (the EMA's only with --ema_decay).
    """
    replicas = config.cpu_replicas if config.distribution == "mirrored" else 1
    state = 4 * num_parameters(config.hidden_sizes) * replicas
    parts = {name: copies * state for name, copies in _COPIES.items()}
    if config.ema_decay:
        parts["EMA weights"] = state
    compute = _BYTES[COMPUTE_DTYPES[config.precision]]
    values = NUM_PIXELS + sum(config.hidden_sizes) + NUM_CLASSES
    parts["train batch"] = config.batch_size * values * compute * 3
    parts["eval batch"] = config.eval_batch_size * (NUM_PIXELS + values * compute * 2)
    return parts


def machine_bytes() -> int | None:
    """The memory this process may use: the physical memory, or a smaller cgroup limit.

    None where the system does not say.
    """
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    for path in _CGROUP_LIMITS:
        try:
            with open(path) as f:
                limit = f.read().strip()
        except OSError:
            continue
        if limit.isdigit():
            total = min(total, int(limit))
    return total


def _may_use_gpu(config) -> bool:
    """Whether the run may place its tensors on an NVIDIA GPU (judged without TensorFlow)."""
    if config.device == "cpu" or os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    gpus = "/proc/driver/nvidia/gpus"
    return os.path.isdir(gpus) and bool(os.listdir(gpus))


def gib(size: int) -> str:
    """A byte count for people: "150 GiB", "2.5 GiB", "0.1 GiB"."""
    return f"{size / _GIB:.0f} GiB" if size >= 10 * _GIB else f"{size / _GIB:.1f} GiB"


def check(config) -> None:
    """Refuses a run whose `estimate` exceeds the machine's memory, naming the flag to change.

    Cheap and TensorFlow-free, so the entry point calls it before TensorFlow
    loads, and the trainer again for library callers. Where the run may use a
    GPU its tensors live in the GPU's memory, whose size only TensorFlow
    knows: not checked (TensorFlow reports a GPU's exhaustion itself).

    Raises:
        UserError: naming the largest part's flag, the estimate, its parts,
            the machine's memory and the fix.
    """
    available = machine_bytes()
    if available is None or _may_use_gpu(config):
        return
    parts = estimate(config)
    needed = sum(parts.values())
    if needed <= available:
        return
    per_parameter = sum(size for name, size in parts.items() if "batch" not in name)
    culprit = max((per_parameter, "parameters"), (parts["train batch"], "train batch"),
                  (parts["eval batch"], "eval batch"))[1]
    replicas = f" with --cpu_replicas={config.cpu_replicas}" if config.cpu_replicas > 1 else ""
    flag, fix = {
        "parameters": (f"--hidden_sizes={','.join(map(str, config.hidden_sizes))}{replicas}",
                       "use smaller layers" + (" or fewer replicas" if replicas else "")),
        "train batch": (f"--batch_size={config.batch_size}", "use a smaller --batch_size"),
        "eval batch": (f"--eval_batch_size={config.eval_batch_size}",
                       "use a smaller --eval_batch_size"),
    }[culprit]
    listed = ", ".join(f"{name} {gib(size)}" for name, size in parts.items()
                       if size >= needed / 100)  # The parts that matter.
    raise UserError(f"{flag} needs about {gib(needed)} ({listed}) but this machine has "
                    f"{gib(available)} of memory; {fix}")
