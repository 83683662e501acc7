"""The multi-layer perceptron: Dense + ReLU (+ dropout) layers ending in 10 logits."""

from __future__ import annotations

import hashlib

import numpy as np
import tensorflow as tf

from mnist_tf.constants import IMAGE_SIZE, NUM_CLASSES, NUM_PIXELS
from mnist_tf.model.deskew import deskew as deskew_images
from mnist_tf.model.dropout import dropout
from mnist_tf.model.layers import Dense


class MLP(tf.Module):
    """784 -> hidden_sizes (ReLU, dropout) -> 10 logits.

    Hidden layers use He initialisation (they feed a ReLU), the output layer
    Glorot. Dropout, when enabled, is applied after each hidden ReLU during
    training only, with masks hashed from a seed the caller passes in
    (`mnist_tf.model.dropout`), so a run's dropout masks are reproducible and
    resumable.
    """

    def __init__(
        self,
        hidden_sizes: tuple[int, ...],
        seed: int,
        dropout: float = 0.0,
        compute_dtype: tf.DType = tf.float32,
        deskew: bool = False,
        name: str | None = None,
    ):
        """Creates the model and all its variables.

        Args:
            hidden_sizes: widths of the hidden layers, input side first.
            seed: seed of the initial weights.
            dropout: probability of dropping a hidden activation in training.
            compute_dtype: dtype of the layers' arithmetic.
            deskew: straighten each digit before the first layer
                (`mnist_tf.model.deskew`; no variables).
            name: module name.
        """
        super().__init__(name=name)
        self.hidden_sizes = tuple(hidden_sizes)
        self.deskew = bool(deskew)
        self.dropout = float(dropout)
        self.compute_dtype = tf.as_dtype(compute_dtype)
        rng = tf.random.Generator.from_seed(seed)
        sizes = (NUM_PIXELS, *self.hidden_sizes, NUM_CLASSES)
        self.layers = []
        with self.name_scope:
            for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
                is_output = i == len(sizes) - 2
                self.layers.append(Dense(
                    fan_in, fan_out, rng,
                    initializer="glorot_uniform" if is_output else "he_normal",
                    compute_dtype=compute_dtype,
                    name="logits" if is_output else f"hidden_{i}",
                ))

    def __call__(
        self, x: tf.Tensor, training: bool = False, seed: tf.Tensor | None = None
    ) -> tf.Tensor:
        """Returns float32 logits [batch, 10] for images x [batch, 784].

        Args:
            x: flattened images.
            training: whether to apply dropout.
            seed: int64 [2] seed of this call's dropout masks; required when
                training with dropout.
        """
        use_dropout = training and self.dropout > 0.0
        if use_dropout and seed is None:
            raise ValueError("training with dropout needs a seed")
        if self.deskew:
            x = deskew_images(x)
        for i, layer in enumerate(self.layers[:-1]):
            x = tf.nn.relu(layer(x))
            if use_dropout:
                # A distinct, reproducible seed per layer: the masks are a pure
                # function of (seed, layer), whether or not XLA compiles them.
                layer_seed = seed + tf.constant([0, i + 1], seed.dtype)
                x = dropout(x, self.dropout, layer_seed)
        # Softmax and the loss run in float32 whatever the compute dtype.
        return tf.cast(self.layers[-1](x), tf.float32)

    def parameters(self) -> list[tf.Variable]:
        """All variables in the documented order: per layer, input side first, kernel then bias."""
        return [v for layer in self.layers for v in (layer.kernel, layer.bias)]

    def kernels(self) -> list[tf.Variable]:
        """The weight matrices (what L2 weight decay applies to)."""
        return [layer.kernel for layer in self.layers]

    def num_parameters(self) -> int:
        """Total number of scalar parameters."""
        return sum(int(np.prod(v.shape)) for v in self.parameters())


def layer_table(model: MLP) -> str:
    """The model's layers as a table, as Keras' `model.summary()` prints them.

    One row per layer (what it computes, its output shape, its parameters),
    then the totals. For `MLP((512, 256), seed, dropout=0.2)`:

        layer     computes                  output shape  parameters
        input     28x28 pixels, flattened   [batch, 784]           0
        hidden_0  Dense, ReLU, dropout 0.2  [batch, 512]     401,920
        hidden_1  Dense, ReLU, dropout 0.2  [batch, 256]     131,328
        logits    Dense                     [batch, 10]        2,570
        total: 535,818 parameters (2.04 MiB): 535,818 trainable, 0 non-trainable

    Args:
        model: the model.

    Returns:
        The table's lines, joined by newlines.
    """
    dtype = "" if model.compute_dtype == tf.float32 else f" in {model.compute_dtype.name}"
    hidden = ", ReLU" + (f", dropout {model.dropout:g}" if model.dropout else "")
    rows = [("layer", "computes", "output shape", "parameters"),
            ("input", f"{IMAGE_SIZE}x{IMAGE_SIZE} pixels, {'deskewed, ' * model.deskew}flattened",
             f"[batch, {NUM_PIXELS}]", "0")]
    for layer in model.layers:
        computes = f"Dense{dtype}" + ("" if layer is model.layers[-1] else hidden)
        count = sum(int(np.prod(v.shape)) for v in (layer.kernel, layer.bias))
        rows.append((layer.name, computes, f"[batch, {layer.output_size}]", f"{count:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join([*(cell.ljust(width) for cell, width in zip(row[:3], widths)),
                        row[3].rjust(widths[3])]) for row in rows]
    total = sum(int(np.prod(v.shape)) for v in model.variables)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    size = sum(int(np.prod(v.shape)) * v.dtype.size for v in model.variables)
    lines.append(f"total: {total:,} parameters ({size / 2**20:.2f} MiB): {trainable:,} "
                 f"trainable, {total - trainable:,} non-trainable")
    return "\n".join(lines)


def params_sha256(model: MLP) -> str:
    """sha256 over the float32 little-endian C-order bytes of `model.parameters()`, in order."""
    digest = hashlib.sha256()
    for variable in model.parameters():
        digest.update(np.ascontiguousarray(variable.numpy(), dtype="<f4").tobytes())
    return digest.hexdigest()
