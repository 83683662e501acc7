"""Weight averaging: an exponential moving average (EMA) of the model's parameters.

After every applied update,
    average <- average - (1 - d_t) * (average - theta_t),
    d_t = min(decay, (1 + t) / (10 + t)),
where t is Adam's step after the update. The warm-up `(1 + t) / (10 + t)` is
`tf.train.ExponentialMovingAverage`'s `num_updates` rule: early averages
forget the random initial weights quickly instead of dragging them along for
~1/(1 - decay) steps. The averages are float32 variables of a second `MLP`
of the same architecture, so evaluation, prediction and export run the
averaged weights through the very same model code, and a checkpoint holds
them beside the weights (exact resume).
"""

from __future__ import annotations

import tensorflow as tf

from mnist_tf.model.mlp import MLP


def ema_decay_at(decay: float, step: tf.Tensor) -> tf.Tensor:
    """d_t = min(decay, (1 + t) / (10 + t)) for Adam's (int64) step t after the update."""
    t = tf.cast(step, tf.float32)
    return tf.minimum(tf.constant(decay, tf.float32), (1.0 + t) / (10.0 + t))


class WeightAverage(tf.Module):
    """The averaged weights of `model`, held as a second MLP.

    Attributes:
        decay: the EMA's decay (0 < decay < 1).
        model: an MLP of the same architecture whose parameters are the
            averages (float32, computing in float32, no dropout).
    """

    def __init__(self, model: MLP, decay: float, name: str | None = None):
        """Creates the averages, starting at `model`'s current weights.

        Raises:
            ValueError: if `decay` is not in (0, 1).
        """
        super().__init__(name=name)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        with self.name_scope:
            self.model = MLP(model.hidden_sizes, seed=0, deskew=model.deskew, name="averaged")
        for average, parameter in zip(self.model.parameters(), model.parameters()):
            average.assign(parameter)

    def update(self, parameters: list[tf.Variable], step: tf.Tensor) -> None:
        """Moves the averages towards `parameters` after the update numbered `step`."""
        keep = ema_decay_at(self.decay, step)
        for average, parameter in zip(self.model.parameters(), parameters):
            average.assign_sub((average - parameter) * (1.0 - keep))
