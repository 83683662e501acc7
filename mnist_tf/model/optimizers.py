"""Adam (Kingma & Ba, 2015, arXiv:1412.6980), written from scratch.

`adam_update` is the pure maths of one step; `Adam` holds the state (an int64
step counter and the m/v slots, created eagerly for a fixed parameter list)
and applies updates with `assign*` only.

We use the paper's "more efficient" ordering (end of Section 2): the bias
corrections are folded into the step size,
    alpha_t = alpha * sqrt(1 - beta_2^t) / (1 - beta_1^t),
    theta_t = theta_{t-1} - alpha_t * m_t / (sqrt(v_t) + epsilon_hat),
which is also what Keras' Adam optimizer computes, so the two agree to
float32 round-off. epsilon defaults to Keras' 1e-7 (the paper's is 1e-8).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def adam_update(
    g: tf.Tensor,
    alpha: tf.Tensor,
    beta_1: float,
    beta_2: float,
    epsilon: float,
    t: tf.Tensor,
    m: tf.Tensor,
    v: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Computes one Adam step.

    Args:
        g: gradient of the parameter.
        alpha: learning rate (float32 scalar).
        beta_1: decay of the first-moment estimate.
        beta_2: decay of the second-moment estimate.
        epsilon: added to sqrt(v) for numerical stability.
        t: 1-based step number (float32 scalar).
        m: previous first moment.
        v: previous second moment.

    Returns:
        (update to subtract from the parameter, new m, new v).
    """
    # m_t = beta_1 * m_{t-1} + (1 - beta_1) * g_t, written as an increment.
    m = m + (g - m) * (1.0 - beta_1)
    # v_t = beta_2 * v_{t-1} + (1 - beta_2) * g_t^2.
    v = v + (tf.square(g) - v) * (1.0 - beta_2)
    # alpha_t = alpha * sqrt(1 - beta_2^t) / (1 - beta_1^t): the bias corrections.
    alpha_t = alpha * tf.sqrt(1.0 - tf.pow(beta_2, t)) / (1.0 - tf.pow(beta_1, t))
    # theta_t = theta_{t-1} - alpha_t * m_t / (sqrt(v_t) + epsilon).
    update = (m * alpha_t) / (tf.sqrt(v) + epsilon)
    return update, m, v


class Adam(tf.Module):
    """Adam's state for a fixed list of float32 parameters.

    Attributes:
        step: int64 number of updates applied so far (the global step).
        m: first-moment slots, one per parameter.
        v: second-moment slots, one per parameter.
    """

    def __init__(
        self,
        parameters: Sequence[tf.Variable],
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        name: str | None = None,
    ):
        """Creates the step counter and zero slots shaped like `parameters`.

        Raises:
            ValueError: on hyper-parameters outside their valid ranges.
        """
        super().__init__(name=name)
        if not 0.0 <= beta_1 < 1.0 or not 0.0 <= beta_2 < 1.0:
            raise ValueError(f"betas must be in [0, 1), got {beta_1}, {beta_2}")
        if epsilon <= 0.0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self._shapes = [tuple(p.shape) for p in parameters]
        with self.name_scope:
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.m = [tf.Variable(tf.zeros_like(p), trainable=False, name="m") for p in parameters]
            self.v = [tf.Variable(tf.zeros_like(p), trainable=False, name="v") for p in parameters]

    def apply(
        self,
        gradients: Sequence[tf.Tensor],
        parameters: Sequence[tf.Variable],
        learning_rate: tf.Tensor | float,
    ) -> None:
        """Applies one Adam update to `parameters` and increments `step`.

        Args:
            gradients: one gradient per parameter, same order as at construction.
            parameters: the parameters passed to the constructor.
            learning_rate: alpha for this step.

        Raises:
            ValueError: if the lists' lengths or shapes do not match the slots,
                or a gradient is None.
        """
        if len(gradients) != len(self._shapes) or len(parameters) != len(self._shapes):
            raise ValueError(
                f"expected {len(self._shapes)} gradients and parameters, "
                f"got {len(gradients)} and {len(parameters)}"
            )
        for i, (g, p, shape) in enumerate(zip(gradients, parameters, self._shapes)):
            if g is None:
                raise ValueError(f"gradient {i} ({p.name}) is None: is it connected to the loss?")
            if tuple(p.shape) != shape or tuple(g.shape) != shape:
                raise ValueError(f"parameter {i} ({p.name}) shape {p.shape} / gradient shape "
                                 f"{g.shape} does not match slot shape {shape}")
        alpha = tf.cast(learning_rate, tf.float32)
        t = tf.cast(self.step + 1, tf.float32)
        for g, p, m, v in zip(gradients, parameters, self.m, self.v):
            update, new_m, new_v = adam_update(
                tf.cast(g, tf.float32), alpha, self.beta_1, self.beta_2, self.epsilon, t, m, v
            )
            m.assign(new_m)
            v.assign(new_v)
            p.assign_sub(update)
        self.step.assign_add(1)
