"""--distribution: TensorFlow's own `tf.distribute` strategies for the custom loop.

* `none`: no strategy; the plain single-device step (`steps.make_train_step`).
* `mirrored`: `tf.distribute.MirroredStrategy` over this machine's GPUs, or,
  without GPUs, over `--cpu_replicas` logical CPU devices (how the tests run
  it on a CPU-only machine).
* `multi_worker`: `tf.distribute.MultiWorkerMirroredStrategy`; each process
  reads its role from the `TF_CONFIG` environment variable.

Both strategies must be set up before TensorFlow's runtime starts (logical
devices cannot be added afterwards, and collective ops must be configured at
start-up), so entry points call `make_strategy` first thing after importing
TensorFlow (`cli.import_tensorflow_quietly(setup=...)`).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from mnist_tf.choices import DISTRIBUTIONS, MAX_CPU_REPLICAS  # noqa: F401 (re-exported)
from mnist_tf.errors import UserError

if TYPE_CHECKING:
    import tensorflow as tf



def make_strategy(distribution: str, cpu_replicas: int = 1) -> tf.distribute.Strategy | None:
    """Creates the strategy a --distribution value asks for.

    Args:
        distribution: none, mirrored or multi_worker.
        cpu_replicas: logical CPU devices to split the CPU into (1: don't split).

    Returns:
        The strategy, or None for `none`.

    Raises:
        UserError: for a multi-worker run without a usable TF_CONFIG.
    """
    import tensorflow as tf

    if cpu_replicas > 1:
        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
    if distribution == "none":
        return None
    if distribution == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    check_tf_config(os.environ.get("TF_CONFIG"))
    return tf.distribute.MultiWorkerMirroredStrategy()


def check_tf_config(text: str | None) -> None:
    """Checks that TF_CONFIG describes this worker's place in a cluster.

    Raises:
        UserError: naming what is missing, with the expected shape.
    """
    example = ('e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not text:
        raise UserError(f"--distribution=multi_worker needs the TF_CONFIG environment "
                        f"variable on every worker ({example})")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        members = cluster[task["type"]]
        if not 0 <= int(task["index"]) < len(members):
            raise IndexError(task["index"])
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise UserError(f"TF_CONFIG: not a cluster and task this worker belongs to "
                        f"({type(e).__name__}: {e}); {example}") from None


def num_replicas(strategy: tf.distribute.Strategy | None) -> int:
    """Replicas that share each global batch (1 without a strategy)."""
    return strategy.num_replicas_in_sync if strategy else 1


def is_chief(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether this process writes checkpoints, summaries and results.

    Only one process of a cluster does: the `chief` task if the cluster has
    one, else worker 0. Without multi-worker distribution, always True.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def wait_for_every_worker(strategy: tf.distribute.Strategy | None) -> None:
    """Returns once every worker of a multi-worker run has called it (at once otherwise).

    Called by each worker when it is done, before it exits. The chief hosts the
    cluster's coordination service: a chief that exits while another worker is
    still evaluating or saving leaves that worker logging "Failed to send RPC
    to coordination service" (seen with default.cfg, where the workers'
    final evaluations end seconds apart). An all-reduce of one number, which
    no worker passes before all have joined, lets them exit together.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return
    import tensorflow as tf

    @tf.function  # Run eagerly, the strategy warns of its overhead.
    def all_reduce_one():
        return strategy.reduce(tf.distribute.ReduceOp.SUM,
                               strategy.run(lambda: tf.constant(1.0)), axis=None)

    all_reduce_one()


def describe(strategy: tf.distribute.Strategy | None) -> str:
    """One line for the run's log."""
    if strategy is None:
        return "none (one device)"
    name = type(strategy).__name__
    # tf.distribute.MultiWorkerMirroredStrategy's class is named after its implementation.
    name = {"CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy"}.get(name, name)
    resolver = getattr(strategy, "cluster_resolver", None)
    where = ""
    if resolver is not None and resolver.task_type:
        where = f", this process is {resolver.task_type} {resolver.task_id}"
        where += " (chief)" if is_chief(strategy) else ""
    devices = getattr(strategy.extended, "worker_devices", ())
    return (f"{name}, {strategy.num_replicas_in_sync} replicas in sync "
            f"({', '.join(devices)}){where}")
