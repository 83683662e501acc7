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

import functools
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


def make_trainer(hidden_sizes: list[int], batch_size: int, learning_rate):
    """(init(seed) -> (params, opt_state), run(params, opt_state, images, labels, order,
    start, length) -> (params, opt_state, last loss)).

    `run` trains `length` batches, those of `order` from batch `start`, in one
    compiled `lax.scan` (compiled once per distinct `length`); the parameters
    and Adam's state are donated. `learning_rate` is a number or an optax
    schedule of the step.
    """
    import functools

    import jax
    import jax.numpy as jnp
    import optax

    optimizer = optax.adam(learning_rate)

    def init(seed: int):
        params = init_params(jax.random.PRNGKey(seed), [784, *hidden_sizes, 10])
        return params, optimizer.init(params)

    def loss_fn(params, images, labels):
        logits = forward(params, images.astype(jnp.float32) / 255.0)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def step(carry, batch_index):
        params, opt_state, images, labels, order = carry
        rows = jax.lax.dynamic_slice_in_dim(order, batch_index * batch_size, batch_size)
        loss, grads = jax.value_and_grad(loss_fn)(params, images[rows], labels[rows])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state, images, labels, order), loss

    @functools.partial(jax.jit, static_argnums=(6,), donate_argnums=(0, 1))
    def run(params, opt_state, images, labels, order, start, length):
        indices = start + jnp.arange(length)
        (params, opt_state, *_), losses = jax.lax.scan(
            step, (params, opt_state, images, labels, order), indices)
        return params, opt_state, losses[-1]

    return init, run


def forward(params, x):
    """Logits of float inputs `x` [N, 784]: ReLU hidden layers, a linear last layer."""
    import jax

    for kernel, bias in params[:-1]:
        x = jax.nn.relu(x @ kernel + bias)
    kernel, bias = params[-1]
    return x @ kernel + bias


def on_device(images, labels):
    """uint8 images [N, 784] and int32 labels, placed on the default device."""
    import jax
    import numpy as np

    return (jax.device_put(np.asarray(images, np.uint8).reshape(len(images), -1)),
            jax.device_put(np.asarray(labels, np.int32)))


def train(images, labels, hidden_sizes: list[int], batch_size: int, epochs: int,
          steps_per_scan: int = 50, seed: int = 0, learning_rate: float = 1e-3):
    """Trains `epochs` epochs at a constant rate; returns (params, [examples/s per epoch]).

    Each epoch draws one permutation and trains its whole scans of whole batches.
    """
    import jax
    import jax.numpy as jnp

    init, run = make_trainer(hidden_sizes, batch_size, learning_rate)
    params, opt_state = init(seed)
    images, labels = on_device(images, labels)
    scans = len(images) // batch_size // steps_per_scan
    key, rates = jax.random.PRNGKey(seed + 1), []
    for _ in range(epochs):
        key, sub = jax.random.split(key)
        order = jax.random.permutation(sub, len(images)).astype(jnp.int32)
        start = time.perf_counter()
        for scan in range(scans):
            params, opt_state, loss = run(params, opt_state, images, labels, order,
                                          scan * steps_per_scan, steps_per_scan)
        float(loss)  # Waits for the epoch's work.
        rates.append(scans * steps_per_scan * batch_size / (time.perf_counter() - start))
    return params, rates


def accuracy(params, images, labels) -> float:
    """Accuracy of `params` on uint8 images (on the device) and their labels.

    One `jax.jit` program for the whole split, compiled at the first call,
    as a JAX engineer would write it, rather than op by op (each op
    dispatched alone).
    """
    return float(_jitted_accuracy()(params, images, labels))


@functools.cache
def _jitted_accuracy():
    import jax
    import jax.numpy as jnp

    def fraction_right(params, images, labels):
        logits = forward(params, images.astype(jnp.float32) / 255.0)
        return (jnp.argmax(logits, axis=1) == labels).mean()

    return jax.jit(fraction_right)


def plan(steps_per_epoch: int, eval_every_steps: int, steps_per_scan: int) -> list[int]:
    """The scan lengths of one epoch: at most `steps_per_scan`, ending at every evaluation."""
    ends = sorted({*range(eval_every_steps, steps_per_epoch, eval_every_steps),
                   steps_per_epoch})
    lengths, step = [], 0
    for end in ends:
        while step < end:
            lengths.append(min(steps_per_scan, end - step))
            step += lengths[-1]
    return lengths


def time_to_target(data, target: float, hidden_sizes: list[int], batch_size: int, epochs: int,
                   learning_rate: float, warmup_steps: int, eval_every_steps: int,
                   steps_per_scan: int = 50, seed: int = 0) -> dict:
    """Trains the recipe until the test accuracy reaches `target`; returns when it did.

    The recipe of configs/fast.cfg: linear warmup to `learning_rate`, then a
    cosine decay to 0 at the last step. The test accuracy is measured on all
    test images at every `eval_every_steps` and at each epoch's end.
    """
    import jax
    import jax.numpy as jnp
    import optax

    images, labels = on_device(data["train_images"], data["train_labels"])
    test_images, test_labels = on_device(data["test_images"], data["test_labels"])
    steps_per_epoch = len(images) // batch_size
    total = epochs * steps_per_epoch
    warmup = min(warmup_steps, total - 1)  # A run shorter than the warmup (small data).
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup, total, 0.0)
    init, run = make_trainer(hidden_sizes, batch_size, schedule)
    params, opt_state = init(seed)
    key, step, evaluations = jax.random.PRNGKey(seed + 1), 0, []
    for _ in range(epochs):
        key, sub = jax.random.split(key)
        order = jax.random.permutation(sub, len(images)).astype(jnp.int32)
        offset = 0
        for length in plan(steps_per_epoch, eval_every_steps, steps_per_scan):
            params, opt_state, _ = run(params, opt_state, images, labels, order, offset, length)
            offset, step = offset + length, step + length
            if offset % eval_every_steps and offset != steps_per_epoch:
                continue
            evaluations.append(accuracy(params, test_images, test_labels))
            if evaluations[-1] >= target:
                return {"target_reached_unix_time": time.time(), "target_reached_step": step,
                        "target_reached_epoch": round(step / steps_per_epoch, 3),
                        "evaluations": evaluations}
    return {"target_reached_unix_time": None, "target_reached_step": None,
            "target_reached_epoch": None, "evaluations": evaluations}


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
    parser.add_argument("--epochs", type=int, default=4,
                        help="Epochs (throughput: the first is a burn-in).")
    parser.add_argument("--steps_per_scan", type=int, default=50)
    parser.add_argument("--examples", type=int, default=60000)
    parser.add_argument("--npz", default=None,
                        help="npz with train_images (uint8), train_labels (and test_images, "
                        "test_labels with --target), as the benchmarks write it (else random "
                        "digits).")
    parser.add_argument("--target", type=float, default=None,
                        help="Train until this test accuracy (time to accuracy) instead of "
                        "timing epochs.")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--warmup_steps", type=int, default=0)
    parser.add_argument("--eval_every_steps", type=int, default=117)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="Print one JSON line.")
    args = parser.parse_args()
    hidden = [int(size) for size in args.hidden_sizes.split(",") if size]
    import jax

    figures = {"trainer": "jax", "jax_version": jax.__version__,
               "batch_size": args.batch_size, "hidden_sizes": hidden}
    if args.target is not None:
        with np.load(args.npz) as data:
            figures.update(time_to_target(
                dict(data), args.target, hidden, args.batch_size, args.epochs,
                args.learning_rate, args.warmup_steps, args.eval_every_steps,
                args.steps_per_scan, args.seed))
        print(json.dumps(figures))
        return
    images, labels = load_images(args.npz, args.examples)
    _, rates = train(images, labels, hidden, args.batch_size, args.epochs, args.steps_per_scan,
                     args.seed, args.learning_rate)
    figures.update(examples_per_second=float(np.median(rates[1:] or rates)), epochs=rates)
    if args.json:
        print(json.dumps(figures))
        return
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
