"""Runners: the ways the one train-step body is traced and fed with batches.

* `IteratorRunner` (the default): tf.data streams each call's batch
  indices; several steps per call in one XLA-compiled loop that gathers the
  batches from the training split held on the device.
* `DeviceLoopRunner` (`--data_on_device`): the same, with the epoch's order
  built on the device and no tf.data at all.
* `DistributedRunner`: a `tf.distribute` strategy's distributed dataset, one
  step per call through `strategy.run`.

Each epoch's order is `pipeline.epoch_order(n, seed, epoch)`, so every runner
trains on the same batches in the same order, and a resumed run picks up the
data order where its checkpoint left it. Each call returns the last step's
loss and gradients, the index (within the call) of the first step that
diverged (-1: none), and the stop vote.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from mnist_tf.data import pipeline
from mnist_tf.training.steps import StepOutput


class CallOutput(NamedTuple):
    """What one runner call returns.

    Attributes:
        loss: the last step's loss.
        gradients: the last step's gradients, one per `model.parameters()` entry.
        diverged_at: int32 scalar, the index within the call of the first step
            that diverged (-1: none).
        stop: bool scalar: some process voted to stop.
    """

    loss: tf.Tensor
    gradients: list[tf.Tensor]
    diverged_at: tf.Tensor
    stop: tf.Tensor


def _first_diverged(output: StepOutput) -> tf.Tensor:
    return tf.where(output.diverged, 0, -1)


def _step_loop(train_step, count, stop_vote, zero_gradients, batch):
    """Runs `count` steps on `batch(i)`; returns the last (loss, gradients), diverged_at, stop.

    A while loop on a tensor `count`: `tf.range(count)` would make XLA want
    `count` as a compile-time constant (one compilation per distinct count).
    `diverged_at` is the index of the first step that diverged (-1: none).
    """
    def body(i, loss, gradients, diverged_at, stop):
        images, labels = batch(i)
        output = train_step(images, labels, stop_vote)
        diverged_at = tf.where((diverged_at < 0) & output.diverged, i, diverged_at)
        return i + 1, output.loss, output.gradients, diverged_at, output.stop

    _, loss, gradients, diverged_at, stop = tf.while_loop(
        lambda i, *_: i < count, body,
        (tf.constant(0, tf.int32), tf.constant(0.0), zero_gradients,
         tf.constant(-1, tf.int32), tf.constant(False)))
    return loss, gradients, diverged_at, stop


def held_on(device: str | None, examples: pipeline.Examples) -> tuple[tf.Tensor, tf.Tensor]:
    """The split's (images, labels), copied once onto `device` (None: where they are).

    The compiled loops gather their batches from these: tensors a traced
    function captures from another device would be copied in on every call.
    """
    if device is None:
        return examples.images, examples.labels
    with tf.device(device):
        return tf.identity(examples.images), tf.identity(examples.labels)


class IteratorRunner:
    """Several steps per call, the batches' indices fed by tf.data: the default path.

    tf.data streams the epoch's order as one chunk of `count` batches'
    indices per call (`pipeline.train_chunks`, following the loop's plan of
    calls, `start_epoch(..., counts)`), and the call gathers each batch from
    the training split held on the device inside one XLA-compiled loop, as
    a JAX loop over data on the device does. The chunk is taken eagerly
    (XLA cannot compile an iterator's get-next) and handed to the compiled
    loop: one get-next and one compiled launch per call instead of per step.

    Attributes:
        train_fn: the traced call (one trace: a fixed signature).
        steps_per_call: the most steps one call runs (the chunk size).
    """

    def __init__(self, train_step, train: pipeline.Examples, batch_size: int, seed: int,
                 zero_gradients: list[tf.Tensor], jit_compile: bool = True,
                 steps_per_call: int = 1, device: str | None = None):
        self._num_train, self._batch_size, self._seed = len(train), batch_size, seed
        self._chunks, self._counts = None, []
        self.steps_per_call = steps_per_call
        images, labels = held_on(device, train)

        # The name is how benchmarks/step_profile.py and hlo_compare.py find this
        # call in a profile or an HLO dump.
        def train_call(index, count, stop_vote):
            def batch(i):
                # A gather, not a slice: XLA would take a slice's start as a constant.
                rows = tf.gather(index, i)
                return tf.gather(images, rows), tf.gather(labels, rows)

            return _step_loop(train_step, count, stop_vote, zero_gradients, batch)

        signature = [tf.TensorSpec([steps_per_call, batch_size], tf.int32, name="index"),
                     tf.TensorSpec([], tf.int32, name="count"),
                     tf.TensorSpec([], tf.int32, name="stop_vote")]
        self.train_fn = tf.function(train_call, input_signature=signature,
                                    jit_compile=jit_compile, autograph=False)

    def start_epoch(self, epoch: int, offset: int, counts: list[int] | None = None) -> None:
        """Starts epoch `epoch` from batch `offset`, in calls of `counts` steps."""
        counts = list(counts or [])
        self._counts = counts[::-1]  # Popped from the end, to check each call.
        self._chunks = iter(pipeline.train_chunks(self._num_train, self._batch_size, self._seed,
                                                  epoch, counts, self.steps_per_call,
                                                  skip_batches=offset))

    def __call__(self, first: int, count: int, stop_vote: int):
        """Runs the next planned call (`count` steps): a `CallOutput`."""
        del first  # The iterator knows its position.
        planned = self._counts.pop() if self._counts else None
        if planned != count:
            raise RuntimeError(f"call of {count} steps, but {planned} were planned: a bug in "
                               "the training loop's plan")
        index, count = next(self._chunks)
        return CallOutput(*self.train_fn(index, count, tf.constant(stop_vote, tf.int32)))

    def graph(self) -> tf.Graph:
        """The compiled loop's graph, for TensorBoard."""
        return self.train_fn.get_concrete_function().graph


class DeviceLoopRunner:
    """Several steps per traced call over the training split held as tensors.

    Python and dispatch overhead is paid once per call instead of once per
    step, and with `jit_compile` XLA compiles the whole loop.
    """

    def __init__(self, train_step, train: pipeline.Examples, batch_size: int, seed: int,
                 zero_gradients: list[tf.Tensor], jit_compile: bool = False,
                 steps_per_call: int = 1, device: str | None = None):
        self._num_train, self._batch_size, self._seed = len(train), batch_size, seed
        self._order = None
        self.steps_per_call = steps_per_call
        images, labels = held_on(device, train)
        positions = tf.range(batch_size, dtype=tf.int32)

        def train_loop(order, first_batch, count, stop_vote):
            def batch(i):
                # A gather, not tf.slice: XLA treats a slice's start as a
                # compile-time constant and would recompile for every call.
                index = tf.gather(order, (first_batch + i) * batch_size + positions)
                return tf.gather(images, index), tf.gather(labels, index)

            return _step_loop(train_step, count, stop_vote, zero_gradients, batch)

        signature = [tf.TensorSpec([self._num_train], tf.int32, name="order"),
                     tf.TensorSpec([], tf.int32, name="first_batch"),
                     tf.TensorSpec([], tf.int32, name="count"),
                     tf.TensorSpec([], tf.int32, name="stop_vote")]
        self.train_fn = tf.function(train_loop, input_signature=signature,
                                    jit_compile=jit_compile, autograph=False)

    def start_epoch(self, epoch: int, offset: int, counts: list[int] | None = None) -> None:
        """Builds epoch `epoch`'s order (the caller passes the in-epoch batch to each call)."""
        del offset, counts
        self._order = pipeline.epoch_order(self._num_train, self._seed, epoch)

    def __call__(self, first: int, count: int, stop_vote: int):
        """Runs `count` steps from the epoch's batch `first` (an in-epoch index)."""
        return CallOutput(*self.train_fn(self._order, tf.constant(first, tf.int32),
                                         tf.constant(count, tf.int32),
                                         tf.constant(stop_vote, tf.int32)))

    def graph(self) -> tf.Graph:
        """The loop's graph, for TensorBoard."""
        return self.train_fn.get_concrete_function().graph


class DistributedRunner:
    """One step per call under a `tf.distribute` strategy (`strategy.run` in the body)."""

    def __init__(self, train_step, strategy: tf.distribute.Strategy, train: pipeline.Examples,
                 batch_size: int, seed: int):
        self._strategy, self._train = strategy, train
        self._batch_size, self._seed = batch_size, seed
        self._batches = None
        self.steps_per_call = 1

        def step(iterator, stop_vote):
            images, labels = next(iterator)
            output = train_step(images, labels, stop_vote)
            return output.loss, output.gradients, _first_diverged(output), output.stop

        self.train_fn = tf.function(step, autograph=False)

    def start_epoch(self, epoch: int, offset: int, counts: list[int] | None = None) -> None:
        """Starts epoch `epoch`'s global batches, split over the replicas."""
        del counts  # One step per call.
        batches = pipeline.train_batches(self._train, self._batch_size, self._seed, epoch,
                                         skip_batches=offset)
        self._batches = iter(self._strategy.experimental_distribute_dataset(
            pipeline.for_distribution(batches)))

    def __call__(self, first: int, count: int, stop_vote: int):
        """Runs one step; every process passes its stop vote into the all-reduce."""
        del first, count
        return CallOutput(*self.train_fn(self._batches, tf.constant(stop_vote, tf.int32)))

    def graph(self) -> None:
        """Not drawn: the step takes an iterator."""
        return None
