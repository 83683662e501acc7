"""What augmentation costs per batch: the affine warp, with and without elastic distortions.

    python benchmarks/augment_cost.py --batch_size=128

Times, XLA-compiled as inside the default train step, the augmentation of one
batch of random uint8 digits (normalised as the step does), `--batches` of
them per traced call so the call overhead vanishes: the affine warp alone
(rotation, scale, shift: one bilinear resampling) and the affine warp joined
with an elastic distortion (the displacement field's counter-based random
numbers, its Gaussian smoothing as two 28x28 matmuls per image, the same one
resampling). It also times the train step of `--hidden_sizes` without
augmentation at this batch (the trainer's own step body and runner), so each
cost is also given as a fraction of a step. Touches nothing on disk.
"""

from __future__ import annotations

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import flags  # noqa: E402

from mnist_tf import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 128, "Images per batch.")
flags.DEFINE_integer("batches", 50, "Batches per traced call.")
flags.DEFINE_integer("repeats", 5, "Timed calls (the median is reported).")
flags.DEFINE_string("hidden_sizes", "1024,1024", "The model whose step the costs compare with.")
flags.DEFINE_float("elastic_alpha", 34.0, "Elastic displacement scale, pixels.")
flags.DEFINE_float("elastic_sigma", 4.0, "Elastic smoothing, pixels.")
flags.DEFINE_string("output", None, "Also write the JSON line to this file.")


def augment_ms_per_batch(augment, images, repeats: int) -> float:
    """Median milliseconds to augment one batch, XLA-compiled, `len(images)` batches a call."""
    import tensorflow as tf

    from mnist_tf.constants import model_input

    @tf.function(jit_compile=True)
    def run(images, seed):
        total = tf.constant(0.0)
        for i in range(images.shape[0]):  # Unrolled: independent batches, one launch.
            total += tf.reduce_sum(augment(model_input(images[i]), seed + i))
        return total

    seed = tf.constant([1, 2], tf.int64)
    times = common.seconds_per_call(lambda: run(images, seed), repeats)
    return 1e3 * statistics.median(times) / int(images.shape[0])


def step_ms(batch_size: int, hidden_sizes: tuple[int, ...], repeats: int) -> float:
    """Median milliseconds of one default train step (no augmentation) at this batch.

    The trainer's runner over 60 batches of random digits per epoch, median
    over `repeats` epochs after a burn-in (`common.measure_mnist_tf`).
    """
    import numpy as np

    from mnist_tf.config import TrainConfig

    config = TrainConfig(hidden_sizes=hidden_sizes, batch_size=batch_size)
    rng = np.random.default_rng(0)
    count = 60 * batch_size
    images = rng.integers(0, 256, (count, 784), dtype=np.uint8)
    labels = rng.integers(0, 10, count).astype(np.int32)
    _, times, _ = common.measure_mnist_tf(config, images, labels, repeats, "/CPU:0")
    return 1e3 * statistics.median(times) / 60


def main(argv):
    del argv
    cli.import_tensorflow_quietly()
    import numpy as np
    import tensorflow as tf

    from mnist_tf.data.augment import AffineAugment

    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (FLAGS.batches, FLAGS.batch_size, 784),
                                      dtype=np.uint8))
    affine = AffineAugment(10.0, 0.1, 2.0)
    elastic = AffineAugment(10.0, 0.1, 2.0, FLAGS.elastic_alpha, FLAGS.elastic_sigma)
    affine_ms = augment_ms_per_batch(affine, images, FLAGS.repeats)
    elastic_ms = augment_ms_per_batch(elastic, images, FLAGS.repeats)
    hidden = tuple(int(s) for s in FLAGS.hidden_sizes.split(","))
    step = step_ms(FLAGS.batch_size, hidden, FLAGS.repeats)
    result = {"benchmark": "augment_cost", "batch_size": FLAGS.batch_size,
              "affine_ms_per_batch": round(affine_ms, 4),
              "affine_elastic_ms_per_batch": round(elastic_ms, 4),
              "elastic_extra_ms_per_batch": round(elastic_ms - affine_ms, 4),
              "step_ms": round(step, 4), "hidden_sizes": list(hidden),
              "elastic_alpha": FLAGS.elastic_alpha, "elastic_sigma": FLAGS.elastic_sigma,
              **common.machine()}
    common.report("Augmentation cost per batch (XLA)", [
        ("batch", f"{FLAGS.batch_size} images, {FLAGS.batches} batches per call"),
        ("affine warp", f"{affine_ms:.3f} ms per batch"),
        ("affine + elastic", f"{elastic_ms:.3f} ms per batch (elastic adds "
                             f"{elastic_ms - affine_ms:.3f} ms)"),
        (f"train step 784-{FLAGS.hidden_sizes.replace(',', '-')}-10",
         f"{step:.3f} ms without augmentation: affine {100 * affine_ms / step:.0f} %, affine "
         f"+ elastic {100 * elastic_ms / step:.0f} % of a step"),
    ], result, FLAGS.output)


if __name__ == "__main__":
    import common

    cli.run(main)
