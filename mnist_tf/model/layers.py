"""A dense (fully connected) layer as a `tf.Module`."""

from __future__ import annotations

import math

import tensorflow as tf


def he_normal(rng: tf.random.Generator, shape: list[int]) -> tf.Tensor:
    """He et al. 2015 ("Delving Deep into Rectifiers"): N(0, 2 / fan_in), for ReLU layers."""
    fan_in = shape[0]
    return rng.normal(shape, stddev=math.sqrt(2.0 / fan_in), dtype=tf.float32)


def glorot_uniform(rng: tf.random.Generator, shape: list[int]) -> tf.Tensor:
    """Glorot & Bengio 2010: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    limit = math.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(shape, minval=-limit, maxval=limit, dtype=tf.float32)


INITIALIZERS = {"he_normal": he_normal, "glorot_uniform": glorot_uniform}


class Dense(tf.Module):
    """y = x @ kernel + bias, with float32 master weights cast to the compute dtype.

    Variables are created eagerly in the constructor with explicit shapes, so
    nothing is created while tracing and checkpoints restore immediately.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        rng: tf.random.Generator,
        initializer: str = "glorot_uniform",
        compute_dtype: tf.DType = tf.float32,
        name: str | None = None,
    ):
        """Creates the layer.

        Args:
            input_size: width of the input.
            output_size: width of the output.
            rng: generator the initial kernel is drawn from.
            initializer: "he_normal" (before a ReLU) or "glorot_uniform".
            compute_dtype: dtype of the matmul; weights stay float32.
            name: module name.

        Raises:
            ValueError: on non-positive sizes or an unknown initializer.
        """
        super().__init__(name=name)
        if input_size <= 0 or output_size <= 0:
            raise ValueError(f"sizes must be positive, got {input_size} -> {output_size}")
        if initializer not in INITIALIZERS:
            raise ValueError(f"unknown initializer {initializer!r}; one of {sorted(INITIALIZERS)}")
        self.input_size = input_size
        self.output_size = output_size
        self.compute_dtype = tf.as_dtype(compute_dtype)
        with self.name_scope:
            self.kernel = tf.Variable(
                INITIALIZERS[initializer](rng, [input_size, output_size]), name="kernel"
            )
            self.bias = tf.Variable(tf.zeros([output_size], tf.float32), name="bias")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Applies the layer to x [batch, input_size]; returns [batch, output_size]."""
        kernel = tf.cast(self.kernel, self.compute_dtype)
        bias = tf.cast(self.bias, self.compute_dtype)
        return tf.matmul(tf.cast(x, self.compute_dtype), kernel) + bias
