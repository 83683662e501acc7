"""TensorBoard output in the workdir: one writer per run, graph, HParams, profiler.

Each split is one TensorBoard run and the workdir itself is the HParams
session's run (with the layer table); where they lie is described in
`mnist_tf.workdir`.

Everything here runs eagerly, outside the traced (possibly XLA-compiled) steps.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.hparams import summary_v2 as hp  # `api` would import Keras too.

from mnist_tf import config as configs
from mnist_tf.images import Picture
from mnist_tf.workdir import SUMMARY_SUBDIR

RUNS = ("train", "validation", "test")
SESSION = "session"  # The writers' name for the workdir's own run: HParams, layer table.
# The HParams metrics, as (run, tag): the curves these runs draw, which
# TensorBoard reads at their last step for each session's row.
HPARAMS_METRICS = (("validation", "accuracy"), ("validation", "loss"),
                   ("test", "accuracy"), ("test", "loss"))
HISTOGRAM_BUCKETS = 30  # tf.summary.histogram's default.


def histogram_buckets(values: tf.Tensor, bucket_count: int = HISTOGRAM_BUCKETS) -> tf.Tensor:
    """Buckets `values` the way TensorBoard's histogram plugin stores them.

    The buckets of `tf.summary.histogram`: equal widths from the minimum to the
    maximum, the last one closed. They are counted with `bincount`, in O(N)
    memory, where `tf.summary.histogram` one-hot encodes every value into an
    [N, bucket_count] float64 matrix: 96 MB and 3-4x the time for the 784x512
    kernel, which made histograms cost ~4% of the default run. Runs eagerly.

    Args:
        values: a tensor of any shape and real dtype.
        bucket_count: number of buckets.

    Returns:
        float64 [bucket_count, 3]: rows of (left edge, right edge, count).
        Non-finite values are left out (the loss curve shows them); all zeros
        if nothing finite is left.
    """
    data = tf.reshape(tf.cast(values, tf.float64), [-1])
    finite = tf.math.is_finite(data)
    if not bool(tf.reduce_all(finite)):  # Masking copies; skip it in the usual case.
        data = tf.boolean_mask(data, finite)
    if int(tf.size(data)) == 0:
        return tf.zeros([bucket_count, 3], tf.float64)
    low, high = tf.reduce_min(data), tf.reduce_max(data)
    # A single distinct value (e.g. zero-initialised biases) has no width to
    # divide; every count then lands in the first bucket.
    width = tf.where(high > low, (high - low) / bucket_count, tf.constant(1.0, tf.float64))
    index = tf.minimum(tf.cast((data - low) / width, tf.int32), bucket_count - 1)
    counts = tf.math.bincount(index, minlength=bucket_count, maxlength=bucket_count,
                              dtype=tf.float64)
    # linspace's last edge may round away from the maximum; pin it.
    edges = tf.concat([tf.linspace(low, high, bucket_count + 1)[:-1], [high]], axis=0)
    return tf.stack([edges[:-1], edges[1:], counts], axis=1)


def hparam_columns() -> dict[str, hp.HParam]:
    """TensorBoard's HParams columns of the `hparam=True` settings, by setting name.

    TensorBoard sorts the columns by their ids, whatever order they are
    declared in, and ticks the first five; so each id starts with the
    setting's place in `config.hparam_names()` (`01_hidden_sizes`), and the
    table shows the setting's name (`display_name`), with its flag help as
    the description.
    """
    declared, defaults = configs.settings(), configs.TrainConfig().hparams()
    return {name: hp.HParam(f"{rank:02d}_{name}", _domain(declared[name], defaults[name]),
                            display_name=name, description=declared[name].help)
            for rank, name in enumerate(configs.hparam_names(), start=1)}


def _domain(declared: configs.Setting, value) -> hp.Domain | None:
    """The values a setting's column can hold: its choices, both booleans, or any number.

    Every run declares the same columns (TensorBoard keeps one run's
    declaration for all), so a domain never depends on this run's value.
    None (free text such as hidden_sizes): TensorBoard takes the values as
    they come.
    """
    if declared.choices:
        return hp.Discrete(list(declared.choices))
    if isinstance(value, bool):
        return hp.Discrete([False, True])
    if isinstance(value, int):
        return None  # Written as text (`_shown`).
    if isinstance(value, float):
        return hp.RealInterval(-math.inf, math.inf)
    return None


def _shown(value):
    """An HParams value as TensorBoard should show it: integers as text (`10`)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class SummaryWriters:
    """Summary writers for the train, validation and test splits, and the HParams session.

    Each split is its own TensorBoard run, so `loss` and `accuracy` of all three
    appear on the same chart; `SESSION` is the run of the workdir itself.
    """

    def __init__(self, workdir: str, runs=RUNS):
        self._logdirs = {run: os.path.join(workdir, SUMMARY_SUBDIR, run) for run in runs}
        self._logdirs[SESSION] = os.path.normpath(os.path.join(workdir, SUMMARY_SUBDIR))
        # The session's event files of earlier starts, replaced by `hparams`.
        session = self._logdirs[SESSION]
        self._earlier_sessions = sorted(glob.glob(os.path.join(session, "events.out.tfevents.*")))
        self._writers = {run: tf.summary.create_file_writer(d) for run, d in self._logdirs.items()}

    def logdir(self, run: str) -> str:
        """Returns the directory of `run` (e.g. for the profiler's trace)."""
        return self._logdirs[run]

    def scalars(self, run: str, step: int, values: dict[str, float]) -> None:
        """Writes `values` (name -> number) for `run` at `step`."""
        with self._writers[run].as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)

    def histograms(self, run: str, step: int, values: dict[str, tf.Tensor]) -> None:
        """Writes a histogram of each tensor in `values` (tag -> tensor) for `run` at `step`.

        Equivalent to `tf.summary.histogram`, but bucketed by `histogram_buckets`.
        """
        metadata = histogram_metadata.create_summary_metadata(display_name="", description="")
        with self._writers[run].as_default(step=step):
            for name, value in values.items():
                tf.summary.write(name, histogram_buckets(value), metadata=metadata)

    def images(self, run: str, step: int, values: dict[str, Picture]) -> None:
        """Writes each picture in `values` (tag -> `images.Picture`) for `run` at `step`.

        The picture's description goes with it: TensorBoard shows it beside the
        image (the (i) button of the image card).
        """
        with self._writers[run].as_default(step=step):
            for name, picture in values.items():
                tf.summary.image(name, np.asarray(picture.pixels, np.uint8)[None],
                                 max_outputs=1, description=picture.description)

    def hparams(self, config: configs.TrainConfig) -> None:
        """Records the run as one HParams session: its columns, metrics and values.

        Written to the workdir itself, the session's directory, where
        TensorBoard finds its metrics in the runs below (`HPARAMS_METRICS`);
        the row is named after the workdir (e.g. `my_run`). Its session group
        is the empty string, which gives each run its own row even when two
        share every hyperparameter (TensorBoard's default, a hash of the
        values, would merge them into one averaged row).

        TensorBoard keeps the first session record it reads, so the session's
        event files of earlier starts are deleted first: after a resume (to
        more epochs, say) the row shows this start's configuration. Integer
        values are written as text, which TensorBoard shows as they are (a
        number it shows to five digits: `10.000`).
        """
        for path in self._earlier_sessions:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        self._earlier_sessions = []
        columns = hparam_columns()
        metrics = [hp.Metric(tag, group=run, display_name=f"{run} {tag}",
                             dataset_type=hp.Metric.VALIDATION if run == "validation" else None)
                   for run, tag in HPARAMS_METRICS]
        with self._writers[SESSION].as_default(step=0):
            hp.hparams_config(hparams=list(columns.values()), metrics=metrics)
            hp.hparams({columns[name]: _shown(value) for name, value in config.hparams().items()},
                       trial_id="")

    def text(self, run: str, step: int, name: str, markdown: str) -> None:
        """Writes `markdown` as text summary `name` of `run` (TensorBoard's Text tab)."""
        with self._writers[run].as_default(step=step):
            tf.summary.text(name, markdown)

    def graph(self, run: str, graph: tf.Graph) -> None:
        """Writes `graph` to `run` for TensorBoard's Graphs tab.

        Pass a traced function's `get_concrete_function().graph`. This writes a
        plain graph event, where `tf.summary.trace_on`/`trace_export` would
        write a 0-d string tensor among the run's scalars, which readers that
        take every 0-d tensor for a scalar (mnist_tf/plot.py) trip over.
        """
        with self._writers[run].as_default():
            tf.summary.graph(graph)

    def flush(self) -> None:
        """Makes everything written so far visible to TensorBoard."""
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        """Flushes and closes all writers."""
        for writer in self._writers.values():
            writer.close()


class ProfilerWindow:
    """Runs TensorFlow's profiler while the global step goes from START to END.

    The global step counts the steps done (as in the progress lines), so the
    window covers END - START training steps.

    The trace lands in `logdir/plugins/profile/<timestamp>/`, where
    TensorBoard's Profile tab (the `tensorboard-plugin-profile` package) finds
    it when `logdir` is a run directory.
    """

    def __init__(self, logdir: str, steps: tuple[int, ...], log: Callable[[str], None] = print):
        """Creates the window; nothing starts until `before_step`.

        Args:
            logdir: the TensorBoard run directory to write the trace to.
            steps: (START, END) global steps, or () for no profiling.
            log: receives one line when profiling starts and stops.
        """
        self._logdir = logdir
        self._start, self._end = steps if steps else (0, 0)
        self._log = log
        self._active = False

    def before_step(self, step: int) -> None:
        """Starts the profiler if the window holds the step about to run (`step` are done)."""
        if self._active or not self._start <= step < self._end:
            return
        try:
            tf.profiler.experimental.start(self._logdir)
        except tf.errors.OpError as e:
            # Another profiler session (e.g. a debugger's) must not stop training.
            self._log(f"Profiler not started ({e.message.strip()}); training goes on")
            self._end = 0
            return
        self._active = True
        self._log(f"Profiling from step {step} to step {self._end} into {self._logdir}")

    def after_step(self, step: int) -> None:
        """Stops the profiler once `step` steps are done and the window is over."""
        if self._active and step >= self._end:
            self.stop()

    def stop(self) -> None:
        """Stops the profiler (if running) and writes its trace."""
        if not self._active:
            return
        self._active = False
        tf.profiler.experimental.stop()
        self._log(f"Profile written to {os.path.join(self._logdir, 'plugins', 'profile')}")
