"""The training configuration: one frozen dataclass, validated on creation."""

from __future__ import annotations

import dataclasses
import math

from mnist_tf.errors import UserError

LR_SCHEDULES = ("constant", "cosine")


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

    def __post_init__(self):
        def positive(name):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be positive, got {getattr(self, name)}")

        def non_negative(name):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0, got {getattr(self, name)}")

        for size in self.hidden_sizes:
            if size <= 0:
                raise ConfigError("hidden_sizes", f"sizes must be positive, got {size}")
        for name in ("batch_size", "epochs", "log_every_steps", "checkpoint_every_steps",
                     "keep_checkpoints", "eval_batch_size"):
            positive(name)
        for name in ("train_steps", "warmup_steps", "weight_decay", "validation_size", "seed"):
            non_negative(name)
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError("learning_rate", f"must be positive, got {self.learning_rate}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                "lr_schedule",
                f"unknown schedule {self.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}",
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        if not math.isfinite(self.weight_decay):
            raise ConfigError("weight_decay", f"must be finite, got {self.weight_decay}")

    def to_dict(self) -> dict:
        """Returns the configuration as JSON-ready values."""
        values = dataclasses.asdict(self)
        values["hidden_sizes"] = list(self.hidden_sizes)
        return values
