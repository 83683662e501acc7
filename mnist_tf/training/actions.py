"""Periodic actions: what the training loop does every N steps, each a small object.

In the manner of CLU's `PeriodicAction` and orbit's `Action(output)`: each
action says when it is next due (`next_due`), so the loop ends each traced
call exactly there, and runs when due, given the step and the last call's
`runners.CallOutput`. The loop body is then
`for action in actions: if action.due(step): action(step, output)`.

Each action holds only the collaborators it uses (the summary writers, the
train metrics, the checkpointer, the evaluator, the log), given when it is
made; none reads another's state except through those.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable
from typing import NamedTuple

import tensorflow as tf

from mnist_tf.training import preemption
from mnist_tf.training.summaries import ProfilerWindow


@dataclasses.dataclass(frozen=True)
class Span:
    """A run's length: `total_steps` in all, `steps_per_epoch` full batches per epoch."""

    total_steps: int
    steps_per_epoch: int

    def epochs(self, step: int) -> float:
        """`step` in epochs (1.5: half-way through the second)."""
        return step / self.steps_per_epoch


def _format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class PeriodicAction:
    """Runs every `every_steps` steps (0: never) and at `last_step` (None: not there).

    Subclasses implement `__call__(step, output)`; `begin(step)` runs once
    before the first traced call and `end()` once after the last, also when
    the loop ends with an error.
    """

    def __init__(self, every_steps: int, last_step: int | None = None):
        self.every_steps = every_steps
        self.last_step = last_step

    def next_due(self, step: int) -> int | None:
        """The next step after `step` at which this action is due (None: none)."""
        if not self.every_steps:
            return None
        return (step // self.every_steps + 1) * self.every_steps

    def due(self, step: int) -> bool:
        """Whether the action runs now that `step` steps are done."""
        if not self.every_steps:
            return False
        return step % self.every_steps == 0 or step == self.last_step

    @property
    def stops(self) -> bool:
        """Whether the action has ended the run: the loop trains no further step."""
        return False

    def begin(self, step: int) -> None:
        """Called once before training starts at `step`."""

    def end(self) -> None:
        """Called once when the loop is over, however it ended."""

    def __call__(self, step: int, output) -> None:
        """Runs the action now that `step` steps are done; `output`: the last call's."""
        raise NotImplementedError


class ReportProgress(PeriodicAction):
    """A progress line (loss, accuracy, examples/s, ETA) and the train scalars.

    The rate counts training time only: the loop reports the seconds of each
    runner call (`count`), so evaluations, checkpoints, histograms and the
    set-up of an epoch between calls never show as a slower line. The steady
    rate (results.json) also leaves out the first interval (tracing, XLA
    compilation, warm-up).

    Attributes:
        latest: the last line's train {"loss", "accuracy"} (None before the first).
    """

    def __init__(self, every_steps: int, span: Span, batch_size: int, metrics, writers,
                 log: Callable[[str], None], state_scalars: Callable[[], dict[str, float]]):
        """Reports every `every_steps` steps and at the run's end.

        Args:
            every_steps: the interval (0: never).
            span: the run's length, for the epoch and the ETA.
            batch_size: the global batch, for examples/s.
            metrics: the train `steps.Metrics`, read and reset at each line.
            writers: the `SummaryWriters` the train scalars go to.
            log: receives the line.
            state_scalars: the training state's own scalars at a line
                (`learning_rate`, and the loss scale's where it applies).
        """
        super().__init__(every_steps, span.total_steps)
        self.span, self.batch_size, self.metrics = span, batch_size, metrics
        self.writers, self.log, self.state_scalars = writers, log, state_scalars
        self.latest: dict[str, float] | None = None
        self.train_seconds, self.train_examples = 0.0, 0
        self._first = True
        self._seconds, self._start_step = 0.0, 0

    def begin(self, step: int) -> None:
        """Starts the first interval."""
        self._seconds, self._start_step = 0.0, step

    def count(self, seconds: float) -> None:
        """Adds the `seconds` of one runner call to the interval's training time."""
        self._seconds += seconds

    def steady_rate(self) -> float | None:
        """Training examples per second of training time, first interval excluded."""
        return self.train_examples / self.train_seconds if self.train_seconds else None

    def __call__(self, step: int, output=None) -> None:
        """Logs the line and writes train/{loss, accuracy, grad_norm, learning_rate, ...}."""
        metrics, total = self.metrics.result(), self.span.total_steps
        examples = (step - self._start_step) * self.batch_size
        rate = examples / max(self._seconds, 1e-9)
        if not self._first:
            self.train_seconds += self._seconds
            self.train_examples += examples
        self._first = False
        steady = self.steady_rate() or rate
        eta = (total - step) * self.batch_size / max(steady, 1e-9)
        self.log(f"step {step}/{total} | epoch {self.span.epochs(step):.2f} | "
                 f"loss {metrics['loss']:.4f} | accuracy {metrics['accuracy']:.2%} | "
                 f"{rate:,.0f} examples/s | ETA {_format_duration(eta)}")
        health = gradient_health(output, metrics, step - self._start_step)
        self.writers.scalars("train", step, {
            "loss": metrics["loss"], "accuracy": metrics["accuracy"],
            "examples_per_second": rate, **health, **self.state_scalars()})
        self.latest = {"loss": metrics["loss"], "accuracy": metrics["accuracy"]}
        self.metrics.reset()
        self._seconds, self._start_step = 0.0, step


def gradient_health(output, metrics: dict, steps: int) -> dict[str, float]:
    """train/grad_norm and, with clipping, train/clipped_fraction for a progress line.

    grad_norm is the global norm of the last step's gradients before clipping
    (the call's output), computed here once per line: per step it would cost
    a pass over every gradient. clipped_fraction is the share of the
    interval's `steps` whose gradients were clipped.
    """
    health = {}
    if output is not None and output.gradients:
        health["grad_norm"] = float(tf.linalg.global_norm(output.gradients))
    if "clipped_steps" in metrics and steps:
        health["clipped_fraction"] = metrics["clipped_steps"] / steps
    return health


class WriteHistograms(PeriodicAction):
    """Histograms of every weight and of the gradients the last step applied."""

    def __init__(self, every_steps: int, span: Span, writers, parameters: dict):
        """`parameters`: {"hidden_0/kernel": variable, ...} in `model.parameters()` order."""
        super().__init__(every_steps, span.total_steps)
        self.writers, self.parameters = writers, parameters

    def __call__(self, step: int, output) -> None:
        """Writes weights/<layer>/<kind> and gradients/<layer>/<kind> (`output.gradients`)."""
        self.writers.histograms("train", step, {
            **{f"weights/{name}": value for name, value in self.parameters.items()},
            **{f"gradients/{name}": g for name, g in zip(self.parameters, output.gradients)},
        })


class SaveCheckpoint(PeriodicAction):
    """Saves the `TrainState` (the final step's checkpoint is saved after the loop)."""

    def __init__(self, every_steps: int, span: Span, checkpointer):
        """`checkpointer`: has `save(step)` (`trainer.Checkpointer`)."""
        super().__init__(every_steps)
        self.span, self.checkpointer = span, checkpointer

    def due(self, step: int) -> bool:
        """Every `every_steps`, except at the last step."""
        return step != self.span.total_steps and super().due(step)

    def __call__(self, step: int, output=None) -> None:
        """Saves checkpoint `ckpt-<step>`."""
        self.checkpointer.save(step)


class Evaluate(PeriodicAction):
    """Validation and test metrics every `every_epochs` epochs' end and every `every_steps`."""

    def __init__(self, every_steps: int, every_epochs: int, span: Span, evaluator,
                 progress: ReportProgress, log: Callable[[str], None]):
        """Evaluates through `evaluator`, giving it `progress.latest` for the history."""
        super().__init__(every_steps, span.total_steps)
        self.every_epochs, self.span = every_epochs, span
        self.evaluator, self.progress, self.log = evaluator, progress, log

    def due(self, step: int) -> bool:
        """At every `every_epochs`-th epoch's end, the last step, and every `every_steps`.

        No `next_due` for the epoch ends: the loop already ends a call at each.
        """
        span = self.span
        return (step % (span.steps_per_epoch * self.every_epochs) == 0
                or step == span.total_steps or super().due(step))

    def __call__(self, step: int, output=None) -> None:
        """Evaluates both splits, writes their summaries and logs one line."""
        span = self.span
        epoch_done = step % span.steps_per_epoch == 0 or step == span.total_steps
        evaluations = self.evaluator(step, self.progress.latest, pictures=epoch_done)
        summary = ", ".join(f"{split} loss {m['loss']:.4f} accuracy {m['accuracy']:.2%}"
                            for split, m in evaluations.items())
        self.log(f"epoch {span.epochs(step):.2f} "
                 f"{'done' if epoch_done else 'evaluated'} (step {step}): {summary}")


class StopAtAccuracy(PeriodicAction):
    """Ends the run once an evaluation's test accuracy reaches the target.

    Attributes:
        reached: None until the target is reached; then its "step", "unix_time"
            and "seconds" since process start. The loop stops once it is set.
    """

    def __init__(self, target: float, evaluator, log: Callable[[str], None],
                 process_start: float):
        """`target`: the test accuracy (0: never stop); `evaluator`: whose results it reads."""
        super().__init__(0)
        self.target, self.evaluator = target, evaluator
        self.log, self.process_start = log, process_start
        self.reached: dict | None = None

    @property
    def stops(self) -> bool:
        """Once the target is reached."""
        return self.reached is not None

    def due(self, step: int) -> bool:
        """Right after an evaluation at this step."""
        return bool(self.target) and self.evaluator.evaluated_step == step

    def __call__(self, step: int, output=None) -> None:
        """Records when the target was reached, which stops the loop."""
        if self.evaluator.evaluations["test"]["accuracy"] < self.target:
            return
        now = time.time()
        self.reached = {"step": step, "unix_time": round(now, 3),
                        "seconds": round(now - self.process_start, 3)}
        self.log(f"Test accuracy reached --stop_at_test_accuracy={self.target} at step {step}, "
                 f"{self.reached['seconds']:.1f}s after process start; stopping")


class KeepBest(PeriodicAction):
    """After each evaluation: keeps a new best checkpoint; stops after `patience` without one.

    The test split never chooses: only the validation metric of `--keep_best`
    is read. The record (best value, its step, the evaluations since) is
    the training state's (`state.BestRecord`), so it resumes exactly.

    Attributes:
        stopped: None until `--early_stopping_patience` evaluations in a row
            brought no new best; then {"step", "patience"}. The loop stops
            once it is set.
    """

    def __init__(self, keeper, evaluator, patience: int, log: Callable[[str], None]):
        """`keeper`: a `trainer.BestCheckpointer` (None: `--keep_best=none`, never due).

        Args:
            keeper: records each evaluation and saves a new best.
            evaluator: whose validation results it reads.
            patience: evaluations without a new best that end the run (0: never).
            log: receives the new-best and stop lines.
        """
        super().__init__(0)
        self.keeper, self.evaluator = keeper, evaluator
        self.patience, self.log = patience, log
        self.stopped: dict | None = None

    @property
    def stops(self) -> bool:
        """Once the patience ran out."""
        return self.stopped is not None

    def begin(self, step: int) -> None:
        """Stops at once if the restored record has run out of patience already."""
        if self.keeper is not None and self._out_of_patience():
            self._stop(step)

    def due(self, step: int) -> bool:
        """Right after an evaluation at this step."""
        return self.keeper is not None and self.evaluator.evaluated_step == step

    def __call__(self, step: int, output=None) -> None:
        """Records the evaluation's value; saves a new best, or counts one more without."""
        keeper = self.keeper
        if keeper.consider(step, self.evaluator.evaluations["validation"]):
            self.log(f"New best {keeper.metric} {keeper.value:.4f} at step {step}: "
                     f"saved {keeper.path}")
        elif self._out_of_patience():
            self._stop(step)

    def _out_of_patience(self) -> bool:
        return bool(self.patience) and self.keeper.stale >= self.patience

    def _stop(self, step: int) -> None:
        keeper = self.keeper
        self.stopped = {"step": step, "patience": self.patience}
        self.log(f"No new best {keeper.metric} in {keeper.stale} evaluations (best "
                 f"{keeper.value:.4f} at step {keeper.step}): stopping early at step {step} "
                 f"(--early_stopping_patience={self.patience})")


class Profile(PeriodicAction):
    """TensorFlow's profiler over the global steps START..END (`--profile_steps`)."""

    def __init__(self, steps: tuple[int, ...], logdir: str, log: Callable[[str], None]):
        """Profiles into the TensorBoard run directory `logdir`; `steps`: () for never."""
        super().__init__(0)
        self.edges = tuple(steps)
        self.window = ProfilerWindow(logdir, self.edges, log=log)

    def next_due(self, step: int) -> int | None:
        """The window's next edge."""
        later = [edge for edge in self.edges if edge > step]
        return min(later) if later else None

    def due(self, step: int) -> bool:
        """At the window's edges."""
        return step in self.edges

    def begin(self, step: int) -> None:
        """Starts profiling at once if the run starts inside the window."""
        self.window.before_step(step)

    def end(self) -> None:
        """Stops a running profiler: left running, it would refuse the next start."""
        self.window.stop()

    def __call__(self, step: int, output=None) -> None:
        """Stops at END; starts at START."""
        self.window.after_step(step)
        self.window.before_step(step)


class Preempt(PeriodicAction):
    """After every call: on SIGTERM/SIGINT, save a checkpoint and stop.

    Under a strategy the stop is the all-reduced vote of every process
    (`output.stop`, returned by the step), so all workers stop after the same
    step.
    """

    def __init__(self, stop_request, checkpointer, span: Span, distributed: bool):
        """Polls `stop_request` (None: never stops); saves through `checkpointer`."""
        # Checked at every call boundary, without shortening the calls.
        super().__init__(0)
        self.stop_request, self.checkpointer = stop_request, checkpointer
        self.span, self.distributed = span, distributed

    def vote(self) -> int:
        """This process's vote for the next call: 1 once a signal arrived."""
        return int(self.stop_request is not None and self.stop_request())

    def due(self, step: int) -> bool:
        """After every call before the run's last step (whether to stop: `__call__`)."""
        return step < self.span.total_steps

    def __call__(self, step: int, output) -> None:
        """If a stop was agreed: keeps the finished call's work, then raises `Stopped`."""
        if not (bool(output.stop) if self.distributed else bool(self.vote())):
            return
        if self.checkpointer.saved_step != step:
            self.checkpointer.save(step)
        signum = (self.stop_request.signum if self.stop_request is not None
                  and self.stop_request.signum else signal.SIGTERM)
        raise preemption.Stopped(signum, step, self.checkpointer.latest)


class Actions(NamedTuple):
    """A run's periodic actions by name; iterating gives the order they run in at a step.

    The evaluation and the best-keeping come before the checkpoint, so a
    checkpoint at a step carries that step's record of the best; the run
    resumed from it does not evaluate that step again.
    """

    profile: Profile
    progress: ReportProgress
    histograms: WriteHistograms
    evaluate: Evaluate
    keep_best: KeepBest
    stop_at_accuracy: StopAtAccuracy
    checkpoint: SaveCheckpoint
    preempt: Preempt

    @property
    def stops(self) -> bool:
        """Whether an action has ended the run (a target reached, patience run out)."""
        return any(action.stops for action in self)
