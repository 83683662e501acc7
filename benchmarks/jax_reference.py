"""The JAX reference: the same MLP trained as a JAX engineer would write it, at its best.

    python benchmarks/jax_reference.py --hidden_sizes=256,128 --batch_size=128

`pip install -e ".[bench]"` installs JAX and optax; the core install stays
TensorFlow-only. JAX compiles with XLA, as mnist_tf's default path does, so the
two differ only in the program each hands to the compiler.

The training loop:

- `jax.jit` of a `lax.scan` over --steps_per_scan optax Adam steps (one
  dispatch per scan, as mnist_tf runs several steps per traced call), with the
  parameters and Adam's state donated, so XLA updates them in place;
- the uint8 images held on the device and normalised in the step (x / 255),
  the labels int32;
- one random permutation per epoch, indexed inside the scan;
- He-uniform weights, zero biases, softmax cross-entropy from logits, Adam
  1e-3: mnist_tf's recipe, without extras (no metrics, no non-finite guard).

Each epoch trains every whole scan of whole batches; the figure is examples/s,
the median epoch after the first (tracing and compilation). Prints one JSON
line (`--json`) or a line per epoch.

Imported by `train_throughput.py` and `time_to_accuracy.py`, which run it in
a subprocess of its own (`run_in_subprocess`): JAX and TensorFlow each bring
their own XLA, and one process holding both would measure neither alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def available() -> bool:
    """Whether JAX and optax are installed (`pip install -e ".[bench]"`)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("jax", "optax"))


def init_params(key, sizes: list[int]):
    """He-uniform kernels and zero biases for layers `sizes[0] -> ... -> sizes[-1]`."""
    import jax
    import jax.numpy as jnp

    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        limit = (6.0 / fan_in) ** 0.5
        params.append((jax.random.uniform(sub, (fan_in, fan_out), jnp.float32, -limit, limit),
                       jnp.zeros((fan_out,), jnp.float32)))
    return params


def make_train_epoch(hidden_sizes: list[int], batch_size: int, steps_per_scan: int,
                     learning_rate: float = 1e-3):
    """(init(seed) -> state, run_scan(state, images, labels, order, start) -> (state, loss)).

    `run_scan` trains `steps_per_scan` batches, those of `order` from batch
    `start`, in one compiled `lax.scan`; the state (parameters, Adam's
    state) is donated.
    """
    import jax
    import jax.numpy as jnp
    import optax

    optimizer = optax.adam(learning_rate)

    def init(seed: int):
        params = init_params(jax.random.PRNGKey(seed), [784, *hidden_sizes, 10])
        return params, optimizer.init(params)

    def loss_fn(params, images, labels):
        x = images.astype(jnp.float32) / 255.0
        for kernel, bias in params[:-1]:
            x = jax.nn.relu(x @ kernel + bias)
        kernel, bias = params[-1]
        logits = x @ kernel + bias
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def step(carry, batch_index):
        params, opt_state, images, labels, order = carry
        rows = jax.lax.dynamic_slice_in_dim(order, batch_index * batch_size, batch_size)
        loss, grads = jax.value_and_grad(loss_fn)(params, images[rows], labels[rows])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state, images, labels, order), loss

    @jax.jit
    def _scan(params, opt_state, images, labels, order, start):
        indices = start + jnp.arange(steps_per_scan)
        (params, opt_state, *_), losses = jax.lax.scan(
            step, (params, opt_state, images, labels, order), indices)
        return params, opt_state, losses[-1]

    run = jax.jit(_scan, donate_argnums=(0, 1))
    return init, run


def train(images, labels, hidden_sizes: list[int], batch_size: int, epochs: int,
          steps_per_scan: int = 50, seed: int = 0, learning_rate: float = 1e-3):
    """Trains `epochs` epochs; returns (parameters, [examples/s of each epoch]).

    The device holds the uint8 images and int32 labels; each epoch draws one
    permutation and trains its whole scans of whole batches.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    init, run = make_train_epoch(hidden_sizes, batch_size, steps_per_scan, learning_rate)
    params, opt_state = init(seed)
    images = jax.device_put(jnp.asarray(np.asarray(images, np.uint8).reshape(len(images), -1)))
    labels = jax.device_put(jnp.asarray(np.asarray(labels, np.int32)))
    scans = len(images) // batch_size // steps_per_scan
    key, rates = jax.random.PRNGKey(seed + 1), []
    for _ in range(epochs):
        key, sub = jax.random.split(key)
        order = jax.random.permutation(sub, len(images)).astype(jnp.int32)
        start = time.perf_counter()
        for scan in range(scans):
            params, opt_state, loss = run(params, opt_state, images, labels, order,
                                          scan * steps_per_scan)
        float(loss)  # Waits for the epoch's work.
        rates.append(scans * steps_per_scan * batch_size / (time.perf_counter() - start))
    return params, rates


def accuracy(params, images, labels) -> float:
    """Test accuracy of `params` on uint8 images."""
    import jax.numpy as jnp
    import numpy as np

    x = jnp.asarray(np.asarray(images, np.uint8).reshape(len(images), -1)).astype(
        jnp.float32) / 255.0
    for kernel, bias in params[:-1]:
        x = jnp.maximum(x @ kernel + bias, 0.0)
    kernel, bias = params[-1]
    return float((jnp.argmax(x @ kernel + bias, axis=1) == jnp.asarray(labels)).mean())


def run_in_subprocess(*args: str, timeout: float = 900) -> dict:
    """Runs this script with `args` and `--json` in a fresh process; returns its JSON line."""
    result = subprocess.run([sys.executable, os.path.join(HERE, "jax_reference.py"), *args,
                             "--json"], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"jax_reference.py failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    import argparse

    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden_sizes", default="256,128")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4, help="Epochs, the first a burn-in.")
    parser.add_argument("--steps_per_scan", type=int, default=50)
    parser.add_argument("--examples", type=int, default=60000)
    parser.add_argument("--npz", default=None,
                        help="npz with train_images (uint8) and train_labels, as "
                        "train_throughput.py writes it (else random digits).")
    parser.add_argument("--json", action="store_true", help="Print one JSON line.")
    args = parser.parse_args()
    hidden = [int(size) for size in args.hidden_sizes.split(",") if size]
    images, labels = load_images(args.npz, args.examples)
    params, rates = train(images, labels, hidden, args.batch_size, args.epochs,
                          args.steps_per_scan)
    steady = rates[1:] or rates
    import jax

    figures = {"trainer": "jax", "jax_version": jax.__version__,
               "batch_size": args.batch_size, "hidden_sizes": hidden,
               "examples_per_second": float(np.median(steady)), "epochs": rates}
    if args.json:
        print(json.dumps(figures))
    else:
        for epoch, rate in enumerate(rates):
            print(f"epoch {epoch}: {rate:,.0f} examples/s")
        print(f"median after the first: {figures['examples_per_second']:,.0f} examples/s")


def load_images(npz: str | None, examples: int):
    """The first `examples` training images and labels of `npz` (random digits without one).

    The callers write the npz from mnist_tf's own data path, so this process
    never imports TensorFlow.
    """
    import numpy as np

    if npz is None:
        rng = np.random.default_rng(0)
        return (rng.integers(0, 256, (examples, 28, 28), dtype=np.uint8),
                rng.integers(0, 10, examples).astype(np.int32))
    with np.load(npz) as data:
        return data["train_images"][:examples], data["train_labels"][:examples]


if __name__ == "__main__":
    main()
