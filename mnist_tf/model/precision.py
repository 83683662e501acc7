"""Mixed precision: compute dtypes, and dynamic loss scaling written by hand.

Master weights and Adam's slots are always float32; the layers cast their
inputs and weights to the compute dtype (`Dense`), and the logits are cast
back to float32 before softmax and the loss (`MLP`, `losses`).

float16 has 5 exponent bits: gradients below ~6e-8 flush to zero. Scaling the
loss by S before differentiating multiplies every gradient by S, lifting small
ones into range; the gradients are divided by S again (in float32) before
Adam sees them. S is adapted as in Micikevicius et al. 2018 ("Mixed Precision
Training") and Keras' former `LossScaleOptimizer`: when a step's gradients
are not all finite, the update is skipped (weights, slots and Adam's step
untouched) and S halves; after `growth_interval` finite steps in a row, S
doubles. bfloat16 has float32's exponent range and needs no scaling.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from mnist_tf.choices import COMPUTE_DTYPES, PRECISIONS


@dataclasses.dataclass(frozen=True)
class Policy:
    """What a `--precision` value means.

    Attributes:
        name: the flag value.
        compute_dtype: dtype of the layers' arithmetic.
        loss_scaling: whether dynamic loss scaling is on (float16 only).
    """

    name: str
    compute_dtype: tf.DType
    loss_scaling: bool


def policy(name: str) -> Policy:
    """Returns the `Policy` of a `--precision` value.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; one of {', '.join(PRECISIONS)}")
    return Policy(name, tf.as_dtype(COMPUTE_DTYPES[name]), loss_scaling=name == "mixed_float16")


class LossScale(tf.Module):
    """Dynamic loss scale state: the scale, the clean-step streak, skipped steps.

    Always part of the checkpoint (inert at scale 1 without float16), so a
    run's checkpoints keep one layout whatever the precision.

    Attributes:
        scale: float32 current loss scale.
        good_steps: int64 consecutive steps with finite gradients since the
            scale last changed.
        skipped_steps: int64 updates skipped for non-finite gradients so far;
            batches trained = Adam's step + skipped_steps.
    """

    def __init__(
        self,
        enabled: bool,
        initial_scale: float = 2.0**15,
        growth_interval: int = 2000,
        skip_nonfinite: bool = False,
        name: str | None = None,
    ):
        """Creates the state.

        Args:
            enabled: whether to scale at all (False: scale stays 1).
            skip_nonfinite: without scaling, still skip (and count) updates
                whose gradients are not all finite (`--nan_policy=skip_step`).
            initial_scale: the starting scale.
            growth_interval: finite steps in a row after which the scale doubles.
            name: module name.
        """
        super().__init__(name=name)
        if growth_interval <= 0:
            raise ValueError(f"growth_interval must be positive, got {growth_interval}")
        self.enabled = enabled
        self.skip_nonfinite = skip_nonfinite
        self.growth_interval = growth_interval
        with self.name_scope:
            self.scale = tf.Variable(initial_scale if enabled else 1.0, dtype=tf.float32,
                                     trainable=False, name="scale")
            self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")
            self.skipped_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                             name="skipped_steps")

    def scale_loss(self, loss: tf.Tensor) -> tf.Tensor:
        """Returns loss · scale (the loss itself when scaling is off)."""
        return loss * self.scale if self.enabled else loss

    def unscale(self, gradients: list[tf.Tensor]) -> list[tf.Tensor]:
        """Casts the gradients to float32 and divides them by the scale."""
        gradients = [tf.cast(g, tf.float32) for g in gradients]
        if not self.enabled:
            return gradients
        inverse = 1.0 / self.scale
        return [g * inverse for g in gradients]

    def update(self, finite: tf.Tensor) -> None:
        """Records a step whose loss and gradients were (not) all finite.

        A non-finite step's update is skipped by the caller. Here it is
        counted in `skipped_steps` (with scaling or `skip_nonfinite`; under
        `--nan_policy=stop` the run ends instead, so nothing is counted), and
        with scaling the scale halves; `growth_interval` finite steps in a
        row double it.

        Args:
            finite: bool scalar, from `steps.global_norm`.
        """
        if not (self.enabled or self.skip_nonfinite):
            return
        self.skipped_steps.assign_add(tf.where(finite, tf.constant(0, tf.int64),
                                               tf.constant(1, tf.int64)))
        if not self.enabled:
            return
        grow = tf.logical_and(finite, self.good_steps + 1 >= self.growth_interval)
        self.scale.assign(tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale),
                                   self.scale * 0.5))
        self.good_steps.assign(tf.where(finite, tf.where(grow, tf.constant(0, tf.int64),
                                                         self.good_steps + 1),
                                        tf.constant(0, tf.int64)))
