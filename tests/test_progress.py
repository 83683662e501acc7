"""The progress line's examples/s counts training time only: the runner's calls."""

import types

import pytest

from mnist_tf.config import TrainConfig
from mnist_tf.training import actions, runners, trainer

BATCH = 10
SECONDS_PER_STEP = 0.5  # The fake runner's speed: 20 examples/s.


class FakeClock:
    """`time` for the trainer: it moves only when a fake says so."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self):
        return self.now

    def time(self):
        return self.now


class FakeRunner:
    """Trains at exactly 20 examples/s of the fake clock; each epoch's set-up is slow."""

    steps_per_call = 5

    def __init__(self, clock):
        self.clock = clock

    def start_epoch(self, epoch, offset, counts=None):
        self.clock.now += 30.0  # Building an epoch's iterator: not a training call.

    def __call__(self, first, count, stop_vote):
        self.clock.now += count * SECONDS_PER_STEP
        return runners.CallOutput(loss=0.5, gradients=[], diverged_at=-1, stop=False)


class FakeEvaluator:
    """Evaluates in 100 s of the fake clock."""

    def __init__(self, clock):
        self.clock, self.evaluations, self.evaluated_step = clock, {}, -1

    def __call__(self, step, train=None, pictures=True):
        self.clock.now += 100.0
        self.evaluations = {"validation": {"loss": 0.4, "accuracy": 0.9}}
        self.evaluated_step = step
        return self.evaluations


def test_evaluation_and_epoch_set_up_do_not_slow_the_progress_rate(monkeypatch):
    clock, lines, scalars = FakeClock(), [], []
    monkeypatch.setattr(trainer, "time", clock)
    span = actions.Span(total_steps=40, steps_per_epoch=20)
    metrics = types.SimpleNamespace(result=lambda: {"loss": 0.5, "accuracy": 0.9},
                                    reset=lambda: None)
    writers = types.SimpleNamespace(
        scalars=lambda run, step, values: scalars.append((run, step, values)),
        logdir=lambda run: "unused")
    periodic = trainer.make_actions(
        TrainConfig(batch_size=BATCH, log_every_steps=5, histogram_every_steps=0), span,
        metrics=metrics, writers=writers, log=lines.append, state_scalars=dict, parameters={},
        checkpointer=None, evaluator=FakeEvaluator(clock))

    assert trainer.train_loop(FakeRunner(clock), span, periodic, 0) == 40

    progress = [line for line in lines if line.startswith("step ")]
    assert len(progress) == 8
    assert sum(line.startswith("epoch ") for line in lines) == 2  # Evaluated at 20 and 40.
    # Every interval, also those right after an evaluation and an epoch's
    # set-up (steps 25 and 40), runs at the runner's speed.
    assert all("| 20 examples/s |" in line for line in progress), progress
    rates = [values["examples_per_second"] for name, _, values in scalars if name == "train"]
    assert rates == pytest.approx([20.0] * 8)
    assert periodic.progress.steady_rate() == pytest.approx(20.0)
    # The ETA: the examples left at that rate (200 after step 20: 10 s).
    assert progress[3].startswith("step 20/40") and progress[3].endswith("ETA 0:00:10")
    assert clock.now > 1000.0 + 2 * 100 + 2 * 30  # The slow parts did take their time.
