"""Learning-rate schedules: constant and cosine decay, each after an optional linear warmup."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from mnist_tf.choices import LR_SCHEDULES

if TYPE_CHECKING:
    import tensorflow as tf



def _warmup(step: tf.Tensor, peak: tf.Tensor, warmup_steps: int, after: tf.Tensor) -> tf.Tensor:
    """Linear warmup: step t < warmup_steps uses peak * (t + 1) / warmup_steps, else `after`.

    Counting from t + 1 means no step is wasted at a learning rate of 0.
    """
    import tensorflow as tf

    if warmup_steps <= 0:
        return after
    t = tf.cast(step, tf.float32)
    return tf.where(t < warmup_steps, peak * (t + 1.0) / float(warmup_steps), after)


@dataclasses.dataclass(frozen=True)
class Constant:
    """lr(step) = learning_rate, after an optional linear warmup."""

    learning_rate: float
    warmup_steps: int = 0

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        """Returns the float32 learning rate at 0-based `step`."""
        import tensorflow as tf

        peak = tf.constant(self.learning_rate, tf.float32)
        return _warmup(step, peak, self.warmup_steps, peak)


@dataclasses.dataclass(frozen=True)
class WarmupCosine:
    """Linear warmup to `learning_rate`, then cosine decay to 0 (Loshchilov & Hutter 2017).

    Step t (0-based) of the warmup uses learning_rate * (t + 1) / warmup_steps;
    afterwards
    lr = learning_rate * 0.5 * (1 + cos(pi * (t - warmup_steps) / (total_steps - warmup_steps))).
    """

    learning_rate: float
    warmup_steps: int
    total_steps: int

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        """Returns the float32 learning rate at 0-based `step`."""
        import tensorflow as tf

        t = tf.cast(step, tf.float32)
        peak = tf.constant(self.learning_rate, tf.float32)
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        progress = tf.clip_by_value((t - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = peak * 0.5 * (1.0 + tf.cos(math.pi * progress))
        return _warmup(step, peak, self.warmup_steps, cosine)


def make_schedule(name: str, learning_rate: float, warmup_steps: int, total_steps: int):
    """Builds the schedule named by `--lr_schedule`.

    Raises:
        ValueError: for an unknown name.
    """
    if name == "constant":
        return Constant(learning_rate, warmup_steps)
    if name == "cosine":
        return WarmupCosine(learning_rate, warmup_steps, total_steps)
    raise ValueError(f"unknown learning-rate schedule {name!r}; one of {', '.join(LR_SCHEDULES)}")
