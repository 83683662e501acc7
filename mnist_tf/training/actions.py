"""Periodic actions: what the training loop does every N steps, each a small object.

In the manner of CLU's `PeriodicAction` and orbit's `Controller`: each action
says when it is next due (`next_due`), so the loop ends each traced call
exactly there, and runs when due (`__call__`). The loop body is then
`for action in actions: if action.due(step): action(step)`.

The actions read and write the loop's shared state through `run`, a
`trainer.Run` (state, writers, checkpoint manager, last step's output,
evaluations, ...).
"""

from __future__ import annotations

import signal
import time

from mnist_tf.training import preemption
from mnist_tf.training.summaries import ProfilerWindow


def _format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class PeriodicAction:
    """Runs every `every_steps` steps (0: never) and, with `at_end`, at the last step.

    Subclasses implement `__call__(step)`; `begin(step)` runs once before the
    first traced call.
    """

    def __init__(self, run, every_steps: int, at_end: bool = True):
        self.run = run
        self.every_steps = every_steps
        self.at_end = at_end

    def next_due(self, step: int) -> int | None:
        """The next step after `step` at which this action is due (None: none)."""
        if not self.every_steps:
            return None
        return (step // self.every_steps + 1) * self.every_steps

    def due(self, step: int) -> bool:
        """Whether the action runs now that `step` steps are done."""
        if not self.every_steps:
            return False
        return step % self.every_steps == 0 or (self.at_end and step == self.run.total_steps)

    def begin(self, step: int) -> None:
        """Called once before training starts at `step`."""

    def __call__(self, step: int) -> None:
        """Runs the action now that `step` steps are done."""
        raise NotImplementedError


class ReportProgress(PeriodicAction):
    """A progress line (loss, accuracy, examples/s, ETA) and the train scalars.

    The rate counts training time only: the loop reports the seconds of each
    runner call (`count`), so evaluations, checkpoints, histograms and the
    set-up of an epoch between calls never show as a slower line. The steady
    rate (results.json) also leaves out the first interval (tracing, XLA
    compilation, warm-up).
    """

    def __init__(self, run, every_steps: int):
        super().__init__(run, every_steps)
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

    def __call__(self, step: int) -> None:
        """Logs the line and writes train/{loss, accuracy, learning_rate, ...}."""
        run = self.run
        metrics = run.train_metrics.result()
        examples = (step - self._start_step) * run.config.batch_size
        rate = examples / max(self._seconds, 1e-9)
        if not self._first:
            self.train_seconds += self._seconds
            self.train_examples += examples
        self._first = False
        steady = self.steady_rate() or rate
        eta = (run.total_steps - step) * run.config.batch_size / max(steady, 1e-9)
        run.log(f"step {step}/{run.total_steps} | epoch {step / run.steps_per_epoch:.2f} | "
                f"loss {metrics['loss']:.4f} | accuracy {metrics['accuracy']:.2%} | "
                f"{rate:,.0f} examples/s | ETA {_format_duration(eta)}")
        run.writers.scalars("train", step, {
            "loss": metrics["loss"], "accuracy": metrics["accuracy"],
            "learning_rate": run.learning_rate(), "examples_per_second": rate,
            **run.loss_scale_scalars()})
        run.train_loss, run.train_accuracy = metrics["loss"], metrics["accuracy"]
        run.train_metrics.reset()
        self._seconds, self._start_step = 0.0, step


class WriteHistograms(PeriodicAction):
    """Histograms of every weight and of the gradients the last step applied."""

    def __call__(self, step: int) -> None:
        """Writes weights/<layer>/<kind> and gradients/<layer>/<kind>."""
        run = self.run
        names = run.parameter_names()
        run.writers.histograms("train", step, {
            **{f"weights/{n}": v for n, v in zip(names, run.state.model.parameters())},
            **{f"gradients/{n}": g for n, g in zip(names, run.output.gradients)},
        })


class SaveCheckpoint(PeriodicAction):
    """Saves the `TrainState` (the final step's checkpoint is saved after the loop)."""

    def __init__(self, run, every_steps: int):
        super().__init__(run, every_steps, at_end=False)

    def due(self, step: int) -> bool:
        """Every `every_steps`, except at the last step."""
        return step != self.run.total_steps and super().due(step)

    def __call__(self, step: int) -> None:
        """Saves checkpoint `ckpt-<step>`."""
        self.run.save(step)


class Evaluate(PeriodicAction):
    """Validation and test metrics every `every_epochs` epochs' end and every `every_steps`."""

    def __init__(self, run, every_steps: int, every_epochs: int = 1):
        super().__init__(run, every_steps)
        self.every_epochs = every_epochs

    def due(self, step: int) -> bool:
        """At every `every_epochs`-th epoch's end, the last step, and every `every_steps`.

        No `next_due` for the epoch ends: the loop already ends a call at each.
        """
        run = self.run
        return (step % (run.steps_per_epoch * self.every_epochs) == 0
                or step == run.total_steps or super().due(step))

    def __call__(self, step: int) -> None:
        """Evaluates both splits, writes their summaries and logs one line."""
        run = self.run
        run.evaluate(step)
        summary = ", ".join(f"{split} loss {m['loss']:.4f} accuracy {m['accuracy']:.2%}"
                            for split, m in run.evaluations.items())
        epoch_done = step % run.steps_per_epoch == 0 or step == run.total_steps
        run.log(f"epoch {step / run.steps_per_epoch:.2f} "
                f"{'done' if epoch_done else 'evaluated'} (step {step}): {summary}")


class StopAtAccuracy(PeriodicAction):
    """Ends the run once an evaluation's test accuracy reaches the target."""

    def __init__(self, run, target: float):
        super().__init__(run, 0, at_end=False)
        self.target = target

    def due(self, step: int) -> bool:
        """Right after an evaluation at this step."""
        return bool(self.target) and self.run.evaluated_step == step

    def __call__(self, step: int) -> None:
        """Records when the target was reached and asks the loop to finish."""
        run = self.run
        if run.evaluations["test"]["accuracy"] < self.target:
            return
        now = time.time()
        run.target_reached = {"step": step, "unix_time": round(now, 3),
                              "seconds": round(now - run.process_start, 3)}
        run.log(f"Test accuracy reached --stop_at_test_accuracy={self.target} at step {step}, "
                f"{run.target_reached['seconds']:.1f}s after process start; stopping")


class Profile(PeriodicAction):
    """TensorFlow's profiler over the global steps START..END (`--profile_steps`)."""

    def __init__(self, run, steps: tuple[int, ...]):
        super().__init__(run, 0, at_end=False)
        self.edges = tuple(steps)
        self.window = ProfilerWindow(run.writers.logdir("train"), self.edges, log=run.log)

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

    def __call__(self, step: int) -> None:
        """Stops at END; starts at START."""
        self.window.after_step(step)
        self.window.before_step(step)


class Preempt(PeriodicAction):
    """After every call: on SIGTERM/SIGINT, save a checkpoint and stop.

    Under a strategy the stop is the all-reduced vote of every process
    (returned by the step), so all workers stop after the same step.
    """

    def __init__(self, run, stop_request):
        # Checked at every call boundary, without shortening the calls.
        super().__init__(run, 0, at_end=False)
        self.stop_request = stop_request

    def vote(self) -> int:
        """This process's vote for the next call: 1 once a signal arrived."""
        return int(self.stop_request is not None and self.stop_request())

    def due(self, step: int) -> bool:
        """When a stop was agreed and the run is not over anyway."""
        run = self.run
        agreed = bool(run.output.stop) if run.strategy is not None else bool(self.vote())
        return agreed and step < run.total_steps

    def __call__(self, step: int) -> None:
        """The call in flight has finished; keep its work, then raise `Stopped`."""
        run = self.run
        if run.saved_step != step:
            run.save(step)
        signum = (self.stop_request.signum if self.stop_request is not None
                  and self.stop_request.signum else signal.SIGTERM)
        raise preemption.Stopped(signum, step, run.manager.latest_checkpoint)
