"""The training loop: data -> model -> traced steps -> checkpoints, summaries, results.

`train_and_evaluate(config, workdir)` is the library entry point; the
command line (`python -m mnist_tf.train`) only parses flags and calls it.

Workdir layout:
    config.json       the run's configuration (architecture checked on resume)
    checkpoints/      tf.train.Checkpoint files (model, Adam, RNG)
    summaries/        TensorBoard runs: train/, validation/, test/, hparams/
                      (see mnist_tf/training/summaries.py for what each holds)
    results.json      final metrics, throughput, params_sha256 and flags
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from mnist_tf import analysis, devices, files, images
from mnist_tf.config import ConfigError, TrainConfig
from mnist_tf.constants import NUM_CLASSES, NUM_PIXELS
from mnist_tf.data import pipeline, sources
from mnist_tf.data.augment import AffineAugment
from mnist_tf.errors import TrainingDiverged, UserError
from mnist_tf.model import precision
from mnist_tf.model.mlp import MLP, params_sha256
from mnist_tf.model.optimizers import Adam
from mnist_tf.model.schedules import make_schedule
from mnist_tf.training import checkpoints, distribute, preemption
from mnist_tf.training.steps import (
    Metrics,
    make_distributed_train_step,
    make_eval_step,
    make_train_loop,
    make_train_step,
)
from mnist_tf.training.summaries import ProfilerWindow, SummaryWriters

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
# Fields that define the checkpoint's shape or data order; a resumed run must
# not change them (others, such as the log interval, may change freely).
ARCHITECTURE_FIELDS = ("hidden_sizes",)
# Misclassified test digits drawn each epoch: 4 rows of 8 stay readable.
MAX_MISCLASSIFIED_IMAGES = 32


def set_seeds(seed: int, deterministic: bool) -> None:
    """Seeds Python, NumPy and TensorFlow; with `deterministic`, also makes ops deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def check_resume_config(workdir: str, config: TrainConfig) -> None:
    """Refuses to resume a workdir whose recorded architecture differs from `config`.

    Raises:
        ConfigError: naming the flag and both values.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            recorded = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is unreadable ({e}); move it away to start afresh") from None
    for field in ARCHITECTURE_FIELDS:
        now = config.to_dict()[field]
        before = recorded.get(field)
        if before is not None and before != now:
            raise ConfigError(
                field,
                f"{now} contradicts {before} recorded in {path}; use another --workdir "
                "or the recorded value",
            )


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One pass of the eval step over a split.

    Attributes:
        metrics: {"loss", "accuracy", "count"}.
        confusion: int64 [10, 10] confusion matrix (rows true, columns
            predicted), or None if not requested.
        mistakes: (images float32 [K, 784], labels [K], predicted [K]) of the
            first K misclassified examples in split order, or None if not
            requested.
    """

    metrics: dict[str, float]
    confusion: np.ndarray | None = None
    mistakes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def evaluate(
    eval_step,
    metrics: Metrics,
    examples: tf.data.Dataset,
    batch_size: int,
    max_mistakes: int | None = None,
) -> Evaluation:
    """Runs `eval_step` over all of `examples`.

    Args:
        eval_step: from `make_eval_step`, bound to `metrics`.
        metrics: reset here, then read once at the end.
        examples: unbatched (image, label) examples.
        batch_size: the eval step's static batch size.
        max_mistakes: if not None, also builds the confusion matrix and keeps
            up to this many misclassified examples, from the same pass. That
            reads each batch's predictions back to the host, so only the split
            that gets images asks for it.

    Returns:
        The `Evaluation`.
    """
    metrics.reset()
    analyse = max_mistakes is not None
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    wrong_images, wrong_labels, wrong_predicted = [], [], []
    kept = 0
    for batch_images, labels, mask in pipeline.eval_batches(examples, batch_size):
        predicted = eval_step(batch_images, labels, mask)
        if not analyse:
            continue
        real = mask.numpy()  # Drops the padding rows of the last batch.
        true, guess = labels.numpy()[real], predicted.numpy()[real]
        confusion += analysis.confusion_matrix(true, guess)
        wrong = np.flatnonzero(true != guess)[:max_mistakes - kept]
        if len(wrong):
            wrong_images.append(batch_images.numpy()[real][wrong])
            wrong_labels.append(true[wrong])
            wrong_predicted.append(guess[wrong])
            kept += len(wrong)
    if not analyse:
        return Evaluation(metrics.result())
    mistakes = (
        np.concatenate(wrong_images) if wrong_images else np.zeros((0, NUM_PIXELS),
                                                                   np.float32),
        np.concatenate(wrong_labels) if wrong_labels else np.zeros((0,), np.int32),
        np.concatenate(wrong_predicted) if wrong_predicted else np.zeros((0,), np.int32),
    )
    return Evaluation(metrics.result(), confusion, mistakes)


def evaluation_images(evaluation: Evaluation) -> dict[str, np.ndarray]:
    """Draws an analysed `Evaluation` for TensorBoard.

    Returns:
        tag -> uint8 [H, W, 3]: "confusion_matrix" always, and
        "misclassified" (digits captioned "pred P true T") when there are
        mistakes.
    """
    pictures = {"confusion_matrix": images.confusion_matrix_image(evaluation.confusion)}
    wrong_images, labels, predicted = evaluation.mistakes
    if len(labels):
        captions = [f"pred {p} true {t}" for p, t in zip(predicted, labels)]
        pictures["misclassified"] = images.digit_grid(
            wrong_images, captions, highlight=[True] * len(labels))
    return pictures


def parameter_names(model: MLP) -> list[str]:
    """Names `model.parameters()` in order: "hidden_0/kernel", "hidden_0/bias", ..."""
    return [f"{layer.name}/{kind}" for layer in model.layers for kind in ("kernel", "bias")]


def _format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def next_stop(step: int, epoch_end: int, config: TrainConfig) -> int:
    """Where the next traced call should stop: at most `steps_per_call` steps on.

    Never past the epoch's end, nor past the next multiple of the log,
    checkpoint, histogram or evaluation interval, nor across a profiler
    window's edge.
    """
    stop = min(epoch_end, step + config.steps_per_call)
    intervals = (config.log_every_steps, config.checkpoint_every_steps,
                 config.histogram_every_steps, config.eval_every_steps)
    for every in intervals:
        if every:
            stop = min(stop, (step // every + 1) * every)
    for edge in config.profile_steps:
        if step < edge:
            stop = min(stop, edge)
    return stop


def _format_rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:,.0f}"


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
        The results, also written to `workdir/results.json` (by the chief).

    Raises:
        UserError: for problems with the configuration, data or workdir.
        preemption.Stopped: when `stop_request` asked for an early stop.
    """
    process_start = time.time() if process_start is None else process_start
    workdir = files.prepare_workdir(workdir)
    # Before any work: asking for a GPU that is not there is an error.
    device = devices.resolve(config.device)
    devices.set_tensor_float_32(config.enable_tensor_float_32)
    if strategy is None and config.distribution != "none":
        strategy = distribute.make_strategy(config.distribution)
    replicas = distribute.num_replicas(strategy)
    if config.batch_size % replicas:
        raise ConfigError("batch_size", f"{config.batch_size} (the global batch) does not split "
                          f"evenly over {replicas} replicas")
    chief = distribute.is_chief(strategy)
    # Workers other than the chief write their checkpoints, summaries and
    # results to a scratch directory that is deleted at the end: only the
    # chief's outputs are the run's (tf.distribute's multi-worker recipe).
    write_dir = None if chief else tempfile.mkdtemp(prefix="mnist_tf_worker_")
    # One training run per workdir at a time (the chief's; other workers only read it).
    lock = files.workdir_lock(workdir) if chief else contextlib.nullcontext()
    try:
        with lock, tf.device(device):
            return _train_and_evaluate(config, workdir, data_dir, manual_dir, allow_download,
                                       splits, log, process_start, device, strategy, write_dir,
                                       stop_request)
    finally:
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)


def _train_and_evaluate(config, workdir, data_dir, manual_dir, allow_download, splits, log,
                        process_start, device, strategy, write_dir, stop_request):
    """`train_and_evaluate` inside its device scope, on a prepared workdir.

    `write_dir`: where this process writes (None: the workdir).
    """
    write_dir = write_dir or workdir
    check_resume_config(workdir, config)
    set_seeds(config.seed, config.deterministic)

    source = None
    if splits is None:
        source = sources.ensure_mnist(data_dir, manual_dir, allow_download, log=log)
        splits = pipeline.load_splits(source.data_dir, config.validation_size)
    steps_per_epoch = splits.num_train // config.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            "batch_size", f"{config.batch_size} exceeds the {splits.num_train} training examples"
        )
    total_steps = config.train_steps or config.epochs * steps_per_epoch

    mixed = precision.policy(config.precision)
    # Under a strategy, the trained state is created as mirrored variables
    # (one copy per replica, kept equal); the checkpoint holds one copy, so
    # checkpoints move freely between strategies.
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = MLP(config.hidden_sizes, seed=config.seed, dropout=config.dropout,
                    compute_dtype=mixed.compute_dtype)
        optimizer = Adam(model.parameters())
        loss_scale = precision.LossScale(enabled=mixed.loss_scaling,
                                         skip_nonfinite=config.nan_policy == "skip_step")
    # Dropout masks come from this generator; it is checkpointed so a resumed
    # run draws the same masks it would have drawn uninterrupted.
    rng = tf.random.Generator.from_seed(config.seed + 1)
    manager = checkpoints.make_manager(
        workdir, config.keep_checkpoints, model=model, optimizer=optimizer, rng=rng,
        loss_scale=loss_scale,
    )
    restored = checkpoints.restore(manager, log=log)
    if write_dir != workdir:
        # Restored from the run's workdir (shared storage), saved to scratch.
        manager = checkpoints.make_manager(
            write_dir, config.keep_checkpoints, model=model, optimizer=optimizer, rng=rng,
            loss_scale=loss_scale,
        )
    # Batches trained: Adam's updates plus those skipped for non-finite gradients.
    step = int(optimizer.step.numpy()) + int(loss_scale.skipped_steps.numpy())
    if restored:
        log(f"Resuming from {restored} at step {step}")
    log(f"Device: {devices.describe(device)}" + (
        "; TF32 matmuls on" if config.enable_tensor_float_32 and device.startswith("/GPU")
        else ""))
    if strategy is not None:
        log(f"Distribution: {distribute.describe(strategy)}; global batch {config.batch_size}, "
            f"{config.batch_size // strategy.num_replicas_in_sync} per replica")
    log(f"Precision: {mixed.name} (compute {mixed.compute_dtype.name}, weights float32"
        + (f", dynamic loss scale {float(loss_scale.scale.numpy()):g}" if mixed.loss_scaling
           else "") + ")")
    files.write_json_atomic(os.path.join(write_dir, CONFIG_FILE), config.to_dict())
    log(f"Model: {model.num_parameters():,} parameters, hidden sizes "
        f"{list(config.hidden_sizes)}; {splits.num_train} train / {splits.num_validation} "
        f"validation / {splits.num_test} test examples; {steps_per_epoch} steps per epoch, "
        f"{total_steps} steps in all")

    schedule = make_schedule(config.lr_schedule, config.learning_rate, config.warmup_steps,
                             total_steps)
    train_metrics, eval_metrics = Metrics(name="train_metrics"), Metrics(name="eval_metrics")
    augment = None
    if config.augments:
        augment = AffineAugment(config.augment_rotation_degrees, config.augment_scale,
                                config.augment_shift_pixels)
    if strategy is not None:
        train_fn = make_distributed_train_step(
            strategy, model, optimizer, schedule, rng, train_metrics, config.batch_size,
            config.weight_decay, augment, loss_scale)
    elif config.data_on_device:
        # The whole (small) training split as tensors, indexed per step: no
        # per-step tf.data hand-off, and several steps per traced call.
        train_fn = make_train_loop(model, optimizer, schedule, rng, train_metrics,
                                   config.batch_size, splits.train.images, splits.train.labels,
                                   config.weight_decay, config.jit_compile, augment, loss_scale)
    else:
        train_fn = make_train_step(model, optimizer, schedule, rng, train_metrics,
                                   config.batch_size, config.weight_decay, config.jit_compile,
                                   augment, loss_scale)
    eval_step = make_eval_step(model, eval_metrics, config.eval_batch_size, config.jit_compile)
    writers = SummaryWriters(write_dir)
    if strategy is None:
        # The train step's graph, for TensorBoard's Graphs tab. The input signature
        # is fixed, so this is the one trace the first call would otherwise do.
        # (The distributed step takes an iterator; its graph is not drawn.)
        writers.graph("train", train_fn.get_concrete_function().graph)
    # One HParams row per workdir (see SummaryWriters.hparams); the final
    # metrics are added to the same run at the end.
    writers.hparams(config.hparams())
    profiler = ProfilerWindow(writers.logdir("train"), config.profile_steps, log=log)
    names = parameter_names(model)

    def run_evaluations(at_step: int) -> dict[str, dict[str, float]]:
        results = {}
        named = {"validation": splits.validation, "test": splits.test}
        for split, examples in named.items():
            if examples is None:
                continue
            # The test split also gets the confusion matrix and misclassified
            # digits, from the same pass that computes its metrics.
            max_mistakes = MAX_MISCLASSIFIED_IMAGES if split == "test" else None
            evaluation = evaluate(eval_step, eval_metrics, examples, config.eval_batch_size,
                                  max_mistakes=max_mistakes)
            results[split] = evaluation.metrics
            writers.scalars(split, at_step, {k: results[split][k] for k in ("loss", "accuracy")})
            if evaluation.confusion is not None:
                writers.images(split, at_step, evaluation_images(evaluation))
        writers.flush()
        return results

    # Steady-state throughput excludes the first interval (tracing, cache fill)
    # and evaluation/checkpoint time.
    train_seconds, train_examples = 0.0, 0
    first_interval = True
    evaluations = {}
    train_metrics.reset()
    interval_start, interval_step = time.perf_counter(), step
    saved_step = step if restored else -1
    target_reached = None  # {"step", "seconds"} once stop_at_test_accuracy is met.
    agreed_stop = False  # Some process (this one, or under a strategy any) was asked to stop.
    try:
        while step < total_steps and target_reached is None:
            epoch, offset = divmod(step, steps_per_epoch)
            epoch_end = min((epoch + 1) * steps_per_epoch, total_steps)
            if config.data_on_device:
                order = pipeline.epoch_order(splits.num_train, config.seed, epoch)
            else:
                batches = pipeline.train_batches(splits.train, config.batch_size, config.seed,
                                             epoch, skip_batches=offset)
                if strategy is not None:
                    batches = strategy.experimental_distribute_dataset(
                        pipeline.for_distribution(batches))
                batches = iter(batches)
            while step < epoch_end:
                # Each call ends exactly where something is due (a log line, a
                # checkpoint, histograms, the profiler, the epoch's end), so the
                # `step % every == 0` checks below see every event.
                stop = next_stop(step, epoch_end, config)
                profiler.before_step(step)
                if config.data_on_device:
                    first = step - epoch * steps_per_epoch
                    loss, gradients = train_fn(order, tf.constant(first, tf.int32),
                                               tf.constant(stop - step, tf.int32))
                elif strategy is not None:
                    vote = int(stop_request is not None and stop_request())
                    loss, gradients, agreed_stop = train_fn(batches, tf.constant(vote, tf.int32))
                    agreed_stop = bool(agreed_stop)
                else:
                    loss, gradients = train_fn(*next(batches))
                step = stop
                # A diverged run's weights are NaN from then on, so the call's
                # last loss tells; nothing of it is saved.
                if config.nan_policy == "stop" and not math.isfinite(float(loss)):
                    writers.close()
                    raise TrainingDiverged(
                        f"the training loss is {float(loss)} at step {step} (the run diverged: "
                        "lower --learning_rate, or --nan_policy=skip_step to skip such steps); "
                        "nothing was saved after it, the last good checkpoint "
                        f"{manager.latest_checkpoint} is kept")
                profiler.after_step(step)
                if step % config.log_every_steps == 0 or step == total_steps:
                    metrics = train_metrics.result()  # Syncs with the device.
                    elapsed = time.perf_counter() - interval_start
                    examples = (step - interval_step) * config.batch_size
                    rate = examples / max(elapsed, 1e-9)
                    if not first_interval:
                        train_seconds += elapsed
                        train_examples += examples
                    first_interval = False
                    steady = train_examples / train_seconds if train_seconds else rate
                    eta = (total_steps - step) * config.batch_size / max(steady, 1e-9)
                    # The rate of the last update applied (the schedule follows Adam's step).
                    learning_rate = float(schedule(tf.maximum(optimizer.step - 1, 0)))
                    log(f"step {step}/{total_steps} | epoch {step / steps_per_epoch:.2f} | "
                        f"loss {metrics['loss']:.4f} | accuracy {metrics['accuracy']:.2%} | "
                        f"{rate:,.0f} examples/s | ETA {_format_duration(eta)}")
                    scalars = {
                        "loss": metrics["loss"], "accuracy": metrics["accuracy"],
                        "learning_rate": learning_rate, "examples_per_second": rate,
                    }
                    if mixed.loss_scaling:
                        scalars["loss_scale"] = float(loss_scale.scale.numpy())
                    if loss_scale.guards:
                        scalars["skipped_steps"] = float(loss_scale.skipped_steps.numpy())
                    writers.scalars("train", step, scalars)
                    train_metrics.reset()
                pause_start = time.perf_counter()
                every = config.histogram_every_steps
                if every and (step % every == 0 or step == total_steps):
                    # Weights after this step's update, and the gradients it applied.
                    writers.histograms("train", step, {
                        **{f"weights/{n}": v for n, v in zip(names, model.parameters())},
                        **{f"gradients/{n}": g for n, g in zip(names, gradients)},
                    })
                if step % config.checkpoint_every_steps == 0 and step != total_steps:
                    manager.save(checkpoint_number=step)
                    saved_step = step
                eval_every = config.eval_every_steps
                epoch_done = step % steps_per_epoch == 0 or step == total_steps
                if epoch_done or (eval_every and step % eval_every == 0):
                    evaluations = run_evaluations(step)
                    summary = ", ".join(
                        f"{split} loss {m['loss']:.4f} accuracy {m['accuracy']:.2%}"
                        for split, m in evaluations.items())
                    what = "done" if epoch_done else "evaluated"
                    log(f"epoch {step / steps_per_epoch:.2f} {what} (step {step}): {summary}")
                    target = config.stop_at_test_accuracy
                    if target and evaluations["test"]["accuracy"] >= target:
                        now = time.time()
                        target_reached = {"step": step, "unix_time": round(now, 3),
                                          "seconds": round(now - process_start, 3)}
                        log(f"Test accuracy reached --stop_at_test_accuracy={target} at step "
                            f"{step}, {target_reached['seconds']:.1f}s after process start; "
                            "stopping")
                        break
                if step % config.log_every_steps == 0 or step == total_steps:
                    interval_start, interval_step = time.perf_counter(), step
                else:
                    interval_start += time.perf_counter() - pause_start
                # Under a strategy, the stop is agreed by all processes in the step itself.
                if strategy is None:
                    agreed_stop = stop_request is not None and stop_request()
                if agreed_stop and step < total_steps:
                    # SIGTERM/SIGINT: the call in flight has finished; keep its work.
                    if saved_step != step:
                        manager.save(checkpoint_number=step)
                    writers.close()
                    signum = (stop_request.signum if stop_request is not None
                              and stop_request.signum else signal.SIGTERM)
                    raise preemption.Stopped(signum, step, manager.latest_checkpoint)
    finally:
        # Also on errors and when the window reaches past the last step: a
        # profiler left running would keep collecting and refuse the next start.
        profiler.stop()

    if not evaluations:
        log(f"Already trained to step {step} of {total_steps}; evaluating only")
        evaluations = run_evaluations(step)
    if saved_step != step:
        manager.save(checkpoint_number=step)

    results = {
        "test_accuracy": evaluations["test"]["accuracy"],
        "test_loss": evaluations["test"]["loss"],
        "validation_accuracy": evaluations.get("validation", {}).get("accuracy"),
        "validation_loss": evaluations.get("validation", {}).get("loss"),
        "global_step": step,
        "epochs_completed": step // steps_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "wall_seconds": round(time.time() - process_start, 3),
        "train_examples_per_second": (
            round(train_examples / train_seconds, 1) if train_seconds else None
        ),
        "params_sha256": params_sha256(model),
        "num_parameters": model.num_parameters(),
        "data_source": source.kind if source else "in-memory",
        "data_dir": source.data_dir if source else None,
        "checkpoint": manager.latest_checkpoint,
        # Set when --stop_at_test_accuracy ended the run: the step, the time
        # and the seconds since process start at which the test accuracy
        # reached it.
        "target_reached": target_reached,
        # Updates skipped for non-finite gradients (float16 loss scaling or
        # --nan_policy=skip_step).
        "skipped_steps": int(loss_scale.skipped_steps.numpy()),
        "flags": config.to_dict(),
    }
    writers.scalars("hparams", step, {
        f"{split}_{name}": evaluations[split][name]
        for split in ("test", "validation") if split in evaluations
        for name in ("accuracy", "loss")
    })
    writers.close()
    files.write_json_atomic(os.path.join(write_dir, RESULTS_FILE), results)
    log(f"Parameters: sha256 {results['params_sha256']}")
    val = results["validation_accuracy"]
    log(f"Done: step {step}, test accuracy {results['test_accuracy']:.2%}, test loss "
        f"{results['test_loss']:.4f}"
        + (f", validation accuracy {val:.2%}" if val is not None else "")
        + f"; {_format_rate(results['train_examples_per_second'])} train examples/s; "
        f"{results['wall_seconds']:.1f}s wall. Results: "
        + (os.path.join(workdir, RESULTS_FILE) if write_dir == workdir
           else "written by the chief"))
    return results
