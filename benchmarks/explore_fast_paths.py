"""Exploration (not yet in the trainer): how fast can the step go with in-memory data?

    python benchmarks/explore_fast_paths.py HIDDEN BATCH STEPS_PER_CALL JIT(0|1)
    python benchmarks/explore_fast_paths.py 256,128 128 50 1

Holds 55,000 random training examples as tensors, draws each epoch's order with
a stateless shuffle of (seed, epoch), and runs STEPS_PER_CALL optimizer steps per
tf.function call (a tf.range loop gathering each batch), optionally
XLA-compiled. It uses mnist_tf's own MLP, loss and Adam; only the loop differs
from the trainer's. Prints examples/s (median of 3 epochs after a burn-in epoch)
and the step's matmul GFLOP/s (counted as in train_throughput.py).
"""

import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

from mnist_tf import losses  # noqa: E402
from mnist_tf.model import MLP  # noqa: E402
from mnist_tf.optimizers import Adam  # noqa: E402

NUM_EXAMPLES = 55000


def main(hidden, batch, steps_per_call, jit):
    rng = np.random.default_rng(0)
    images = tf.constant(rng.random((NUM_EXAMPLES, 784), dtype=np.float32))
    labels = tf.constant(rng.integers(0, 10, NUM_EXAMPLES).astype(np.int32))
    model = MLP(hidden, seed=0)
    optimizer = Adam(model.parameters())
    parameters, kernels = model.parameters(), model.kernels()

    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss, _ = losses.total_loss(model(x, training=True), y, kernels, 0.0)
        optimizer.apply(tape.gradient(loss, parameters), parameters, 1e-3)
        return loss

    signature = [tf.TensorSpec([NUM_EXAMPLES], tf.int32), tf.TensorSpec([], tf.int32),
                 tf.TensorSpec([], tf.int32)]

    @tf.function(jit_compile=jit, input_signature=signature)
    def several_steps(order, first_batch, count):
        loss = tf.constant(0.0)
        for i in tf.range(count):
            index = tf.slice(order, [(first_batch + i) * batch], [batch])
            loss = train_step(tf.gather(images, index), tf.gather(labels, index))
        return loss

    steps_per_epoch = NUM_EXAMPLES // batch

    def run_epoch(epoch):
        noise = tf.random.stateless_uniform([NUM_EXAMPLES], [0, epoch])
        order = tf.cast(tf.argsort(noise), tf.int32)
        done = 0
        while done < steps_per_epoch:
            count = min(steps_per_call, steps_per_epoch - done)
            several_steps(order, done, count)
            done += count
        optimizer.step.numpy()  # Synchronise before reading the clock.

    run_epoch(0)
    times = []
    for epoch in range(1, 4):
        start = time.perf_counter()
        run_epoch(epoch)
        times.append(time.perf_counter() - start)
    rate = steps_per_epoch * batch / np.median(times)
    sizes = [784, *hidden, 10]
    pairs = list(zip(sizes[:-1], sizes[1:]))
    flops = 4 * batch * sum(i * o for i, o in pairs) + 2 * batch * sum(i * o for i, o in pairs[1:])
    print(f"hidden={list(hidden)} batch={batch} steps_per_call={steps_per_call} jit={jit}: "
          f"{rate:,.0f} examples/s, {rate / batch * flops / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main(tuple(int(h) for h in sys.argv[1].split(",")), int(sys.argv[2]), int(sys.argv[3]),
         sys.argv[4] == "1")
