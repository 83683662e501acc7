"""The training loop: data -> TrainState -> runner calls -> periodic actions -> results.

`train_and_evaluate(config, workdir)` is the library entry point; the command
line (`python -m mnist_tf.train`) only parses flags and calls it.

What it writes in the workdir is described in `mnist_tf.workdir`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable

import numpy as np
import tensorflow as tf

from mnist_tf import devices, disk, memory
from mnist_tf import workdir as workdirs
from mnist_tf.config import ConfigError, TrainConfig
from mnist_tf.data import pipeline, sources
from mnist_tf.data.augment import AffineAugment
from mnist_tf.errors import CheckpointError, TrainingDiverged
from mnist_tf.model.mlp import layer_table
from mnist_tf.model.precision import policy
from mnist_tf.model.schedules import make_schedule
from mnist_tf.training import actions, checkpoints, distribute, preemption, results, runners
from mnist_tf.training import state as train_state
from mnist_tf.training.evaluation import evaluate, evaluation_images
from mnist_tf.training.steps import Metrics, make_eval_step, make_train_step
from mnist_tf.training.summaries import SESSION, SummaryWriters

# Misclassified test digits drawn each epoch: 4 rows of 8 stay readable.
MAX_MISCLASSIFIED_IMAGES = 32


def set_seeds(seed: int, deterministic: bool) -> None:
    """Seeds Python, NumPy and TensorFlow; with `deterministic`, also makes ops deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def parameter_names(model) -> list[str]:
    """Names `model.parameters()` in order: "hidden_0/kernel", "hidden_0/bias", ..."""
    return [f"{layer.name}/{kind}" for layer in model.layers for kind in ("kernel", "bias")]


class Checkpointer:
    """Saves the `TrainState` through its checkpoint manager; remembers the newest step saved.

    Attributes:
        manager: the `tf.train.CheckpointManager` of the run's checkpoints.
        saved_step: the step of the newest checkpoint this process wrote or
            restored (-1: none), so that a step is never saved twice.
    """

    def __init__(self, manager: tf.train.CheckpointManager, saved_step: int = -1):
        self.manager, self.saved_step = manager, saved_step

    @property
    def latest(self) -> str | None:
        """The newest checkpoint's path (None: none yet)."""
        return self.manager.latest_checkpoint

    def save(self, step: int) -> None:
        """Saves the state as checkpoint `ckpt-<step>`; a failed save leaves no litter."""
        directory = self.manager.directory
        with disk.writing(os.path.join(directory, f"ckpt-{step}"),
                          "free space or use another --workdir", created_in=directory):
            self.manager.save(checkpoint_number=step)
        self.saved_step = step


class BestCheckpointer:
    """Keeps the checkpoint of the best validation value (`--keep_best`) apart from the others.

    The record is the training state's `BestRecord`, updated before the save:
    the best checkpoint carries itself as the best, and a rolling checkpoint
    the record as of its step. The checkpoint is a whole training state
    (`checkpoints.save_best`); the rolling ones' rotation never touches it.
    """

    def __init__(self, record: train_state.BestRecord, checkpoint: tf.train.Checkpoint,
                 write_dir: str):
        """Saves `checkpoint` (the state's, `state.best_checkpoint`) under `write_dir`."""
        self.record, self.checkpoint, self.write_dir = record, checkpoint, write_dir
        self.metric = record.metric
        self.directory = os.path.join(write_dir, workdirs.BEST_SUBDIR)

    @property
    def value(self) -> float:
        """The best value so far."""
        return float(self.record.value.numpy())

    @property
    def step(self) -> int:
        """Its step (-1: no evaluation yet)."""
        return int(self.record.step.numpy())

    @property
    def stale(self) -> int:
        """Evaluations in a row without a new best."""
        return int(self.record.stale.numpy())

    @property
    def path(self) -> str | None:
        """The best checkpoint's prefix (None: no evaluation yet)."""
        return os.path.join(self.directory, f"ckpt-{self.step}") if self.record.kept else None

    def consider(self, step: int, validation: dict[str, float]) -> bool:
        """Records the validation metrics at `step`; saves the state if they are a new best."""
        value = validation[self.metric.removeprefix("validation_")]
        if not self.record.update(step, value):
            return False
        checkpoints.save_best(self.checkpoint, self.write_dir, step)
        return True

    def summary(self) -> dict | None:
        """results.json's "best": metric, value, step, checkpoint (None before an evaluation)."""
        if not self.record.kept:
            return None
        return {"metric": self.metric, "value": self.value, "step": self.step,
                "checkpoint": self.path}


class Evaluator:
    """Evaluates the held-out splits through the one traced eval step; keeps the history.

    Attributes:
        evaluations: the latest {split: metrics}; evaluated_step: its step (-1: none yet).
        history: one entry per evaluation written to summaries, as Keras'
            `History.history`: lists keyed `epoch`, `step`, `train_loss`,
            `train_accuracy` and `<split>_loss`, `<split>_accuracy` per
            evaluated split.
    """

    def __init__(self, config: TrainConfig, model, splits: pipeline.Splits, span: actions.Span,
                 writers: SummaryWriters | None):
        """Traces nothing yet; `writers` None (the re-run of a complete run): no summaries."""
        self.metrics = Metrics(name="eval_metrics")
        self.step_fn = make_eval_step(model, self.metrics, config.eval_batch_size,
                                      config.jit_compile, splits.test.images.dtype)
        named = {"validation": splits.validation, "test": splits.test}
        self.batches = {split: pipeline.eval_batches(examples, config.eval_batch_size)
                        for split, examples in named.items() if examples is not None}
        self.span, self.writers = span, writers
        self.evaluations: dict[str, dict] = {}
        self.evaluated_step = -1
        self.history: dict[str, list] = {}

    def __call__(self, step: int, train: dict[str, float] | None = None,
                 pictures: bool = True) -> dict[str, dict]:
        """Evaluates validation and test at `step`; the test split also gets its pictures.

        Args:
            step: the steps done.
            train: the latest train {"loss", "accuracy"} for the history (None: none yet).
            pictures: draw the test split's confusion matrix and misclassified
                digits for TensorBoard. Drawing and encoding them costs about
                half as much as the pass itself, so the evaluations between
                epoch ends (`--eval_every_steps`) write scalars only.

        Returns:
            {split: metrics}, also kept as `evaluations`.
        """
        results, writers = {}, self.writers
        for split, batches in self.batches.items():
            evaluation = evaluate(
                self.step_fn, self.metrics, batches,
                max_mistakes=(MAX_MISCLASSIFIED_IMAGES
                              if split == "test" and pictures and writers is not None
                              else None))
            results[split] = evaluation.metrics
            if writers is None:
                continue
            writers.scalars(split, step, {k: results[split][k] for k in ("loss", "accuracy")})
            if evaluation.confusion is not None:
                writers.images(split, step, evaluation_images(evaluation))
        if writers is not None:
            writers.flush()
            self._record_history(step, results, train or {})
        self.evaluations, self.evaluated_step = results, step
        return results

    def _record_history(self, step: int, results: dict[str, dict], train: dict) -> None:
        """Appends one evaluation (and the latest train metrics) to `history`."""
        entry = {"epoch": self.span.epochs(step), "step": step,
                 "train_loss": train.get("loss"), "train_accuracy": train.get("accuracy")}
        for split, metrics in results.items():
            entry.update({f"{split}_loss": metrics["loss"],
                          f"{split}_accuracy": metrics["accuracy"]})
        for key, value in entry.items():
            self.history.setdefault(key, []).append(value)


def make_runner(config, state, schedule, metrics, splits, strategy, device=None, log=None):
    """The runner for the config's mode, over the one step body.

    tf.data with several XLA-compiled steps per call by default; the
    training split held as tensors with `data_on_device`; one step per call
    without XLA under a strategy (said in one line, `log`).
    """
    augment = None
    if config.augments:
        augment = AffineAugment(config.augment_rotation_degrees, config.augment_scale,
                                config.augment_shift_pixels, config.augment_elastic_alpha,
                                config.augment_elastic_sigma)
    train_step = make_train_step(state, schedule, metrics, config.batch_size,
                                 config.weight_decay, augment, config.nan_policy, strategy,
                                 config.clip_grad_norm)
    if strategy is not None:
        slower = [name for name, on in (("XLA", config.jit_compile),
                                        (f"{config.steps_per_call} steps per call",
                                         config.steps_per_call > 1),
                                        ("data on the device", config.data_on_device)) if on]
        if slower and log:
            log(f"Fast path: under --distribution={config.distribution} the step runs without "
                f"{', '.join(slower)} (XLA cannot compile a replica's step reading mirrored "
                "variables placed on other devices): tf.data, one step per call")
        return runners.DistributedRunner(train_step, strategy, splits.train, config.batch_size,
                                         config.seed)
    zeros = [tf.zeros_like(p) for p in state.model.parameters()]
    if config.data_on_device:
        return runners.DeviceLoopRunner(train_step, splits.train, config.batch_size,
                                        config.seed, zeros, config.jit_compile,
                                        config.steps_per_call, device)
    return runners.IteratorRunner(train_step, splits.train, config.batch_size, config.seed,
                                  zeros, config.jit_compile, config.steps_per_call, device)


def make_actions(config: TrainConfig, span: actions.Span, *, metrics, writers, log, state_scalars,
                 parameters, checkpointer, evaluator, best=None, stop_request=None,
                 distributed=False, process_start=0.0) -> actions.Actions:
    """The run's periodic actions, each given only the collaborators it uses.

    Args:
        config: the intervals, the batch size, the accuracy target and the patience.
        span: the run's length.
        metrics: the train `steps.Metrics` the progress lines read and reset.
        writers: the run's `SummaryWriters`.
        log: receives console lines.
        state_scalars: the training state's scalars for the progress summaries.
        parameters: {name: variable} of the model, for the histograms.
        checkpointer: a `Checkpointer`.
        evaluator: an `Evaluator`.
        best: a `BestCheckpointer` (None: `--keep_best=none`).
        stop_request: polled for SIGTERM/SIGINT (None: never).
        distributed: whether the stop is the step's all-reduced vote.
        process_start: `time.time()` at process start, for `StopAtAccuracy`.
    """
    progress = actions.ReportProgress(config.log_every_steps, span, config.batch_size, metrics,
                                      writers, log, state_scalars)
    return actions.Actions(
        profile=actions.Profile(config.profile_steps, writers.logdir("train"), log),
        progress=progress,
        histograms=actions.WriteHistograms(config.histogram_every_steps, span, writers,
                                           parameters),
        evaluate=actions.Evaluate(config.eval_every_steps, config.eval_every_epochs, span,
                                  evaluator, progress, log),
        keep_best=actions.KeepBest(best, evaluator, config.early_stopping_patience, log),
        stop_at_accuracy=actions.StopAtAccuracy(config.stop_at_test_accuracy, evaluator, log,
                                                process_start),
        checkpoint=actions.SaveCheckpoint(config.checkpoint_every_steps, span, checkpointer),
        preempt=actions.Preempt(stop_request, checkpointer, span, distributed),
    )


def _state_scalars(state: train_state.TrainState, schedule) -> dict[str, float]:
    """The state's train scalars: learning_rate, loss_scale and skipped_steps where they apply.

    The learning rate is the last update's (the schedule follows Adam's
    step); loss_scale under float16; skipped_steps when steps may be skipped.
    """
    loss_scale = state.loss_scale
    scalars = {"learning_rate": float(schedule(tf.maximum(state.optimizer.step - 1, 0)))}
    if loss_scale.enabled:
        scalars["loss_scale"] = float(loss_scale.scale.numpy())
    if loss_scale.enabled or loss_scale.skip_nonfinite:
        scalars["skipped_steps"] = float(loss_scale.skipped_steps.numpy())
    return scalars


def _check_diverged(output: runners.CallOutput, first: int, config: TrainConfig,
                    kept: str | None) -> None:
    """Raises `TrainingDiverged` if a step of the call from step `first` was not finite.

    Args:
        output: the call's output; its `diverged_at` is the index of the first
            step with a non-finite loss or gradient (-1: none).
        first: the steps done before the call.
        config: the run's configuration, for the causes the message names.
        kept: the newest checkpoint (None: none was saved).
    """
    diverged_at = int(output.diverged_at)
    if diverged_at < 0:
        return
    step = first + diverged_at + 1
    # Weight decay adds weight_decay * w to every gradient: large, it alone diverges.
    causes = " or ".join(f"--{name} (now {getattr(config, name):g})" for name in
                         ("learning_rate", "weight_decay") if getattr(config, name))
    raise TrainingDiverged(
        f"the training loss or its gradients are not finite at step {step} (the run "
        f"diverged: train afresh in another --workdir with a lower {causes}, or resume "
        "with --nan_policy=skip_step to skip such steps); nothing was saved after it, "
        + (f"the last good checkpoint {kept} is kept" if kept else
           "and no checkpoint was saved before it"))


def next_stop(step: int, epoch_end: int, steps_per_call: int,
              periodic: Iterable[actions.PeriodicAction]) -> int:
    """Where the next traced call ends: at most `steps_per_call` steps on.

    Never past the epoch's end nor past any action's next due step, so each
    action sees every step it is due at.
    """
    dues = [action.next_due(step) for action in periodic]
    return min([epoch_end, step + steps_per_call] + [due for due in dues if due is not None])


def plan_calls(steps_per_call: int, step: int, epoch_end: int,
               periodic: Iterable[actions.PeriodicAction]) -> list[int]:
    """The steps of each call from `step` to `epoch_end`, as `train_loop` will make them."""
    counts = []
    while step < epoch_end:
        stop = next_stop(step, epoch_end, steps_per_call, periodic)
        counts.append(stop - step)
        step = stop
    return counts


def train_loop(runner, span: actions.Span, periodic: actions.Actions, step: int,
               check: Callable[[runners.CallOutput, int], None] | None = None) -> int:
    """Trains from `step` to the span's end (or an early stop); returns the step reached.

    Each traced call runs up to `steps_per_call` steps and ends exactly where
    an action is due or the epoch ends; then `check(output, first step)`
    (the divergence check) and every due action `action(step, output)` run.
    The loop stops early once an action ends the run (`periodic.stops`: the
    accuracy target reached, or the early-stopping patience run out).

    Args:
        runner: one of `runners`' runners (`make_runner`).
        span: the run's length.
        periodic: the run's actions (`make_actions`).
        step: the steps already done.
        check: called with each call's output and its first step; may raise.
    """
    progress = periodic.progress
    for action in periodic:
        action.begin(step)
    try:
        while step < span.total_steps and not periodic.stops:
            epoch, offset = divmod(step, span.steps_per_epoch)
            epoch_end = min((epoch + 1) * span.steps_per_epoch, span.total_steps)
            runner.start_epoch(epoch, offset,
                               plan_calls(runner.steps_per_call, step, epoch_end, periodic))
            while step < epoch_end and not periodic.stops:
                stop = next_stop(step, epoch_end, runner.steps_per_call, periodic)
                call_start = time.perf_counter()
                output = runner(step - epoch * span.steps_per_epoch, stop - step,
                                periodic.preempt.vote())
                # Reading an output waits for the call's work (a GPU call returns
                # once queued), so the progress rate counts the call's whole time.
                int(output.diverged_at)
                progress.count(time.perf_counter() - call_start)
                if check is not None:
                    check(output, step)
                step = stop
                for action in periodic:
                    if action.due(step):
                        action(step, output)
    finally:
        # Also on errors: a profiler left running would refuse the next start.
        for action in periodic:
            action.end()
    return step


def train_and_evaluate(
    config: TrainConfig,
    workdir: str,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    allow_download: bool = True,
    splits: pipeline.Splits | None = None,
    log: Callable[[str], None] = print,
    process_start: float | None = None,
    strategy: tf.distribute.Strategy | None = None,
    stop_request: preemption.StopRequest | None = None,
) -> dict:
    """Trains (or resumes) a model as `config` says and evaluates it.

    Args:
        config: the run's configuration.
        workdir: where checkpoints, summaries and results go.
        data_dir: TFDS data directory (None: TFDS's default).
        manual_dir: optional directory with the official IDX files.
        allow_download: whether TFDS's own download may be tried.
        splits: preprocessed splits to use instead of loading MNIST (tests).
        log: receives console lines.
        process_start: `time.time()` at process start, for `wall_seconds`.
        strategy: the `tf.distribute` strategy of `config.distribution`,
            created by the entry point before TensorFlow started
            (`distribute.make_strategy`); None: made here if needed (possible
            for `mirrored` without extra CPU replicas only).
        stop_request: polled after every traced call; once it reports a SIGTERM or
            SIGINT, a checkpoint is saved and `preemption.Stopped` raised.

    Returns:
        The results, also written to `workdir/results.json` (by the chief),
        except `history`: the per-evaluation metrics of this process's
        training (`Evaluator.history`), returned only, since a resumed run's
        earlier evaluations are not in its checkpoint ({} for the re-run of a
        complete run, which trains nothing).

    Raises:
        UserError: for problems with the configuration, data or workdir.
        TrainingDiverged: under `--nan_policy=stop`, at a non-finite step.
        preemption.Stopped: when `stop_request` asked for an early stop.
    """
    process_start = time.time() if process_start is None else process_start
    memory.check(config)  # Before any work: a run too large for the machine is refused.
    device = devices.resolve(config.device)  # Before any work: a missing GPU is an error.
    devices.set_tensor_float_32(config.enable_tensor_float_32)
    if strategy is None and config.distribution != "none":
        strategy = distribute.make_strategy(config.distribution)
    replicas = distribute.num_replicas(strategy)
    if config.batch_size % replicas:
        raise ConfigError("batch_size", f"{config.batch_size} (the global batch) does not split "
                          f"evenly over {replicas} replicas")
    chief = distribute.is_chief(strategy)
    # Only the chief claims (and creates) the shared workdir: the others only read
    # it, and would see the chief's files half-written.
    workdir = workdirs.prepare(workdir) if chief else os.path.abspath(workdir)
    # Workers other than the chief write their checkpoints, summaries and
    # results to a scratch directory that is deleted at the end: only the
    # chief's outputs are the run's (tf.distribute's multi-worker recipe).
    write_dir = workdir if chief else tempfile.mkdtemp(prefix="mnist_tf_worker_")
    # One training run per workdir at a time (the chief's; other workers only read it).
    lock = workdirs.lock(workdir) if chief else contextlib.nullcontext()
    try:
        with lock, tf.device(device):
            load_data = functools.partial(_load_data, config, splits, data_dir, manual_dir,
                                          allow_download, log)
            return _run_in_workdir(config, workdir, write_dir, device, strategy, load_data,
                                   log, process_start, stop_request)
    finally:
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)


def _run_in_workdir(config: TrainConfig, workdir: str, write_dir: str, device: str, strategy,
                    load_data, log, process_start: float, stop_request) -> dict:
    """Trains, finishes or re-evaluates the run in the locked `workdir`; returns the results.

    `write_dir` is `workdir` for the chief, a scratch directory for the others.
    """
    chief = write_dir == workdir
    # Checked against the configuration the checkpoints carry: deleting
    # or editing config.json cannot make a contradicting resume pass.
    recorded, recorded_in = train_state.recorded_config(workdir)
    workdirs.check_resume(workdir, config, recorded, recorded_in)
    if chief and not os.path.exists(os.path.join(workdir, workdirs.CONFIG_FILE)):
        # Marks the workdir as a run's at once (the recorded run's, if it was deleted).
        workdirs.write_config(workdir, recorded or config)
    set_seeds(config.seed, config.deterministic)
    source, splits = load_data()
    state = train_state.TrainState(config, strategy)
    restored, from_best = _restore(state, workdir, log)
    # Restored from the shared workdir; a worker other than the chief saves to scratch.
    checkpointer = Checkpointer(
        train_state.make_manager(state, write_dir, config.keep_checkpoints, log),
        saved_step=state.step if restored and not from_best else -1)
    steps_per_epoch = splits.num_train // config.batch_size
    span = actions.Span(config.train_steps or config.epochs * steps_per_epoch, steps_per_epoch)
    schedule = make_schedule(config.lr_schedule, config.learning_rate, config.warmup_steps,
                             span.total_steps)
    metrics = Metrics(name="train_metrics", clipping=bool(config.clip_grad_norm))
    runner = make_runner(config, state, schedule, metrics, splits, strategy, device, log)
    complete = results.recorded_results(state, config, span, workdir, restored)
    _log_setup(config, state, span, splits, device, strategy, restored, log,
               complete=complete is not None)
    if complete is not None:  # Nothing left to train: the run's record stays as is.
        evaluator = Evaluator(config, state.eval_model, splits, span, writers=None)
        return {**results.reevaluate(config, state, span, evaluator, complete, workdir,
                                     restored, chief, log), "history": {}}
    # (Created only now: a writer creates its event file at once.)
    writers = SummaryWriters(write_dir)
    workdirs.write_config(write_dir, config)
    try:
        evaluator = Evaluator(config, state.eval_model, splits, span, writers)
        best = _best_checkpointer(state, write_dir, chief, log)
        _write_preamble(writers, config, state, runner, log)
        periodic = make_actions(
            config, span, metrics=metrics, writers=writers, log=log,
            state_scalars=functools.partial(_state_scalars, state, schedule),
            parameters=dict(zip(parameter_names(state.model), state.model.parameters())),
            checkpointer=checkpointer, evaluator=evaluator, best=best, stop_request=stop_request,
            distributed=strategy is not None, process_start=process_start)
        metrics.reset()
        step = _train_to_end(config, state.step, runner, span, periodic, evaluator,
                             checkpointer, log, stop_request)
        run_results = results.collect(config, state, span, step, source, evaluator,
                                      checkpointer, periodic, process_start)
    except preemption.Stopped as stopped:
        if chief:
            raise
        # This worker's checkpoint is in its scratch directory, deleted
        # below; the run's is the chief's, saved at the same step.
        raise preemption.Stopped(stopped.signum, stopped.step, os.path.join(
            workdir, workdirs.CHECKPOINT_SUBDIR, f"ckpt-{stopped.step}")) from None
    finally:
        writers.close()  # Also on errors: the events written so far are kept.
    return results.report(run_results, write_dir, workdir, log)


def _restore(state: train_state.TrainState, workdir: str, log) -> tuple[str | None, bool]:
    """Restores the run's newest checkpoint, a best one newer than every rolling one included.

    A run killed after saving a new best (`--keep_best`) and before its next
    rolling checkpoint resumes from that best: a whole training state, so
    the run goes on exactly as it would have, and its record of the best
    (value, step, file) is the one the file itself carries.

    Returns:
        (the restored path or None, whether it is the best checkpoint).
    """
    if state.best is not None:
        best, rolling = workdirs.best_checkpoint_paths(workdir), workdirs.checkpoint_paths(workdir)
        step = workdirs.checkpoint_step
        if best and (not rolling or step(best[0]) > step(rolling[0])):
            try:
                return train_state.restore(state, workdir, best[0], log=log), True
            except CheckpointError as e:
                if not rolling:
                    raise
                # Every variable is restored again from the rolling checkpoint.
                log(f"warning: {e}; resuming from the newest rolling checkpoint instead")
    return train_state.restore(state, workdir, log=log), False


def _best_checkpointer(state: train_state.TrainState, write_dir: str, chief: bool,
                       log) -> BestCheckpointer | None:
    """The run's `BestCheckpointer` (None: `--keep_best=none`).

    The restored record decides which best checkpoint is the run's: the chief
    deletes any other (a run killed while replacing its best leaves both).
    """
    if state.best is None:
        return None
    if chief:
        deleted = checkpoints.prune_best(write_dir, int(state.best.step.numpy()))
        if deleted:
            log(f"Deleted {', '.join(deleted)}: the restored record of the best names "
                + (f"ckpt-{int(state.best.step.numpy())}" if state.best.kept else "none yet")
                + " (a run stopped while replacing its best checkpoint leaves both)")
    return BestCheckpointer(state.best, train_state.best_checkpoint(state), write_dir)


def _load_data(config, splits, data_dir, manual_dir, allow_download, log):
    """Returns (the data source or None, the splits), refusing a batch larger than the data."""
    source = None
    if splits is None:
        source = sources.ensure_mnist(data_dir, manual_dir, allow_download, log=log)
        splits = pipeline.load_splits(source.data_dir, config.validation_size)
    if splits.num_train < config.batch_size:
        raise ConfigError(
            "batch_size", f"{config.batch_size} exceeds the {splits.num_train} training examples")
    return source, splits


def _log_setup(config: TrainConfig, state, span: actions.Span, splits: pipeline.Splits,
               device: str, strategy, restored: str | None, log, complete: bool = False) -> None:
    """Logs where the run resumes, its device, distribution, precision and model."""
    if restored:
        log(f"Restored {restored}: the run is complete (step {state.step} of {span.total_steps})"
            if complete else f"Resuming from {restored} at step {state.step}")
    log(f"Device: {devices.describe(device)}" + (
        "; TF32 matmuls on" if config.enable_tensor_float_32 and device.startswith("/GPU")
        else ""))
    if strategy is not None:
        log(f"Distribution: {distribute.describe(strategy)}; global batch "
            f"{config.batch_size}, {config.batch_size // strategy.num_replicas_in_sync} "
            "per replica")
    mixed = policy(config.precision)
    log(f"Precision: {mixed.name} (compute {mixed.compute_dtype.name}, weights float32"
        + (f", dynamic loss scale {float(state.loss_scale.scale.numpy()):g}"
           if mixed.loss_scaling else "") + ")")
    log(f"Model: {state.model.num_parameters():,} parameters, hidden sizes "
        f"{list(config.hidden_sizes)}; {splits.num_train} train / {splits.num_validation} "
        f"validation / {splits.num_test} test examples; {span.steps_per_epoch} steps per epoch, "
        f"{span.total_steps} steps in all")
    log(f"Weights: evaluation and inference use {config.weights_description}")


def _write_preamble(writers: SummaryWriters, config: TrainConfig, state, runner, log) -> None:
    """Logs and writes the layer table; writes the step's graph and the HParams session."""
    table = layer_table(state.model)  # As Keras' model.summary(), before the first step.
    for line in table.splitlines():
        log(f"  {line}")
    writers.text(SESSION, state.step, "layers", f"```\n{table}\n```")
    graph = runner.graph()
    if graph is not None:  # TensorBoard's Graphs tab (the distributed step is not drawn).
        writers.graph("train", graph)
    # One HParams row per workdir, its metrics the validation and test curves.
    writers.hparams(config)


def _train_to_end(config: TrainConfig, step: int, runner, span: actions.Span,
                  periodic: actions.Actions, evaluator: Evaluator, checkpointer: Checkpointer,
                  log, stop_request) -> int:
    """Trains from `step` to the end, evaluates if nothing was left to train, saves.

    Returns:
        The step reached.
    """
    def check(output: runners.CallOutput, first: int) -> None:
        _check_diverged(output, first, config, checkpointer.latest)

    step = train_loop(runner, span, periodic, step,
                      check if config.nan_policy == "stop" else None)
    if stop_request is not None:  # Nothing polls it now: a signal ends the process at once.
        stop_request.release()
    if not evaluator.evaluations:
        log(f"Already trained to step {step} of {span.total_steps}; evaluating only")
        evaluator(step, periodic.progress.latest)
    if checkpointer.saved_step != step:
        checkpointer.save(step)
    return step
