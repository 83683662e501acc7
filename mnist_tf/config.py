"""The training configuration: one frozen dataclass, validated on creation."""

from __future__ import annotations

import dataclasses
import math
import re

from mnist_tf.errors import UserError

LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # See mnist_tf/model/precision.py.
NAN_POLICIES = ("stop", "skip_step")
DISTRIBUTIONS = ("none", "mirrored", "multi_worker")  # See mnist_tf/training/distribute.py.
DEVICE_PATTERN = re.compile(r"^(auto|cpu|gpu|gpu:\d+)$")  # See mnist_tf/devices.py.
# Fields that can change what a run learns: logged as TensorBoard HParams so
# runs sharing a --logdir compare side by side. Logging-only fields (intervals,
# batch size of evaluation) would only add columns.
HPARAM_FIELDS = ("hidden_sizes", "batch_size", "epochs", "train_steps", "learning_rate",
                 "lr_schedule", "warmup_steps", "weight_decay", "dropout", "validation_size",
                 "seed", "deterministic", "jit_compile", "augment_rotation_degrees",
                 "augment_scale", "augment_shift_pixels", "precision")


class ConfigError(UserError):
    """An invalid configuration value.

    Attributes:
        field: the name of the offending field; entry points map it to the flag
            of the same name.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"--{field}: {message}")
        self.field = field


def parse_hidden_sizes(text: str) -> tuple[int, ...]:
    """Parses a comma-separated list of hidden layer widths such as "256,128".

    An empty string means no hidden layer (a linear classifier).

    Raises:
        ConfigError: if an entry is not a positive integer.
    """
    text = text.strip()
    if not text:
        return ()
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) <= 0:
            raise ConfigError(
                "hidden_sizes",
                f"{text!r} is not a comma-separated list of positive integers (e.g. 256,128)",
            )
        sizes.append(int(part))
    return tuple(sizes)


def parse_profile_steps(text: str) -> tuple[int, ...]:
    """Parses a profiler window "START,END" (global steps); "" means no profiling.

    Raises:
        ConfigError: unless the text is empty or two integers 0 <= START < END.
    """
    text = text.strip()
    if not text:
        return ()
    parts = [part.strip() for part in text.split(",")]
    try:
        start, end = (int(part) for part in parts)
    except ValueError:
        raise ConfigError(
            "profile_steps", f"{text!r} is not two integers START,END (e.g. 100,110)"
        ) from None
    steps = (start, end)
    _check_profile_steps(steps)
    return steps


def _check_profile_steps(steps: tuple[int, ...]) -> None:
    if not steps:
        return
    if len(steps) != 2 or not all(isinstance(s, int) for s in steps):
        raise ConfigError("profile_steps", f"{steps} is not two integers START,END")
    start, end = steps
    if not 0 <= start < end:
        raise ConfigError(
            "profile_steps", f"needs 0 <= START < END, got {start},{end} (e.g. 100,110)"
        )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    Field names match the command-line flags of `python -m mnist_tf.train`.
    """

    hidden_sizes: tuple[int, ...] = (512, 256)
    batch_size: int = 128
    epochs: int = 10
    train_steps: int = 0  # 0: derive from `epochs`.
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    dropout: float = 0.0
    validation_size: int = 5000
    seed: int = 0
    deterministic: bool = False
    log_every_steps: int = 100
    checkpoint_every_steps: int = 1000
    keep_checkpoints: int = 3
    jit_compile: bool = False
    eval_batch_size: int = 1000
    histogram_every_steps: int = 500  # 0: no weight/gradient histograms.
    profile_steps: tuple[int, ...] = ()  # (START, END) global steps to profile; (): none.
    data_on_device: bool = False  # Hold the training split as tensors; index per step.
    steps_per_call: int = 1  # Optimizer steps per traced call (needs data_on_device).
    # Random affine warps of the training images (mnist_tf/data/augment.py); all 0: off.
    augment_rotation_degrees: float = 0.0
    augment_scale: float = 0.0
    augment_shift_pixels: float = 0.0
    # Evaluate every this many steps as well as at each epoch's end (0: epoch ends only).
    eval_every_steps: int = 0
    # Stop as soon as an evaluation's test accuracy reaches this (0: train to the end).
    stop_at_test_accuracy: float = 0.0
    # Compute precision (mnist_tf/model/precision.py); weights and Adam stay float32.
    precision: str = "float32"
    # auto | cpu | gpu | gpu:N (mnist_tf/devices.py).
    device: str = "auto"
    # TF32 matmuls on GPUs that have them; off, so float32 means float32.
    enable_tensor_float_32: bool = False
    # none | mirrored | multi_worker (mnist_tf/training/distribute.py); batch_size is global.
    distribution: str = "none"
    # Logical CPU devices to split the CPU into, for mirrored runs without GPUs.
    cpu_replicas: int = 1
    # A non-finite loss: stop the run (keeping the last good checkpoint), or
    # skip that step's update and go on.
    nan_policy: str = "stop"

    def __post_init__(self):
        # A config read back from config.json holds a list; keep the frozen
        # dataclass hashable and comparable with the flag-built one.
        object.__setattr__(self, "profile_steps", tuple(self.profile_steps))

        def positive(name):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be positive, got {getattr(self, name)}")

        def non_negative(name):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):  # NaN fails both comparisons.
                raise ConfigError(name, f"must be a finite number >= 0, got {value}")

        for size in self.hidden_sizes:
            if size <= 0:
                raise ConfigError("hidden_sizes", f"sizes must be positive, got {size}")
        for name in ("batch_size", "epochs", "log_every_steps", "checkpoint_every_steps",
                     "keep_checkpoints", "eval_batch_size", "steps_per_call", "cpu_replicas"):
            positive(name)
        if self.steps_per_call > 1 and not self.data_on_device:
            raise ConfigError("steps_per_call", f"{self.steps_per_call} needs --data_on_device "
                              "(several steps per call index the training data held as tensors)")
        for name in ("train_steps", "warmup_steps", "weight_decay", "validation_size", "seed",
                     "histogram_every_steps", "eval_every_steps", "augment_rotation_degrees",
                     "augment_shift_pixels"):
            non_negative(name)
        _check_profile_steps(self.profile_steps)
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError("learning_rate", f"must be positive, got {self.learning_rate}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                "lr_schedule",
                f"unknown schedule {self.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}",
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.augment_scale < 1.0:  # Also rejects NaN.
            raise ConfigError("augment_scale", f"must be in [0, 1), got {self.augment_scale}")
        if self.augment_rotation_degrees > 180.0:
            raise ConfigError("augment_rotation_degrees",
                              f"must be at most 180, got {self.augment_rotation_degrees}")
        if self.augment_shift_pixels > 14.0:
            raise ConfigError("augment_shift_pixels",
                              f"must be at most 14 (half the image), got "
                              f"{self.augment_shift_pixels}")
        if not 0.0 <= self.stop_at_test_accuracy <= 1.0:
            raise ConfigError("stop_at_test_accuracy",
                              f"must be a fraction in [0, 1] (e.g. 0.98), got "
                              f"{self.stop_at_test_accuracy}")
        if self.precision not in PRECISIONS:
            raise ConfigError("precision", f"unknown precision {self.precision!r}; choose one "
                              f"of {', '.join(PRECISIONS)}")
        if self.nan_policy not in NAN_POLICIES:
            raise ConfigError("nan_policy", f"unknown policy {self.nan_policy!r}; choose one of "
                              f"{', '.join(NAN_POLICIES)}")
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError("distribution", f"unknown distribution {self.distribution!r}; "
                              f"choose one of {', '.join(DISTRIBUTIONS)}")
        if self.distribution != "none" and self.data_on_device:
            raise ConfigError("data_on_device", "cannot be combined with --distribution="
                              f"{self.distribution} (distributed runs feed tf.data batches)")
        if self.distribution != "none" and self.jit_compile:
            raise ConfigError("jit_compile", "cannot be combined with --distribution="
                              f"{self.distribution} here (XLA cannot compile a replica's step "
                              "that reads mirrored variables placed on other devices); add "
                              "--nojit_compile")
        if self.cpu_replicas > 1 and self.distribution != "mirrored":
            raise ConfigError("cpu_replicas", f"{self.cpu_replicas} needs "
                              "--distribution=mirrored (it splits the CPU into replicas)")
        if not DEVICE_PATTERN.match(self.device):
            raise ConfigError("device", f"{self.device!r} is not one of auto, cpu, gpu, gpu:N "
                              "(e.g. gpu:0)")
        if not math.isfinite(self.weight_decay):
            raise ConfigError("weight_decay", f"must be finite, got {self.weight_decay}")

    @property
    def augments(self) -> bool:
        """Whether the training images are randomly warped."""
        return any((self.augment_rotation_degrees, self.augment_scale,
                    self.augment_shift_pixels))

    def to_dict(self) -> dict:
        """Returns the configuration as JSON-ready values."""
        values = dataclasses.asdict(self)
        values["hidden_sizes"] = list(self.hidden_sizes)
        values["profile_steps"] = list(self.profile_steps)
        return values

    def hparams(self) -> dict[str, bool | int | float | str]:
        """Returns the `HPARAM_FIELDS` as TensorBoard HParams values.

        `hidden_sizes` becomes its flag spelling ("512,256"; "none" for a linear
        model), since HParams values are scalars.
        """
        values = {name: getattr(self, name) for name in HPARAM_FIELDS}
        values["hidden_sizes"] = ",".join(map(str, self.hidden_sizes)) or "none"
        return values
