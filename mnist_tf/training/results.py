"""What a run records: results.json, when a run is complete, and the re-run's re-evaluation.

The trainer (`training.trainer`) collects a run's results at its end
(`collect`, `report`); a re-run of a complete run (`recorded_results`) leaves
them as they are and evaluates the restored model afresh (`reevaluate`). The
files are described in `mnist_tf.workdir`.
"""

from __future__ import annotations

import math
import os
import time

from mnist_tf import workdir as workdirs
from mnist_tf.config import TrainConfig
from mnist_tf.model.mlp import params_sha256
from mnist_tf.training import actions


def collect(config: TrainConfig, state, span: actions.Span, step: int, source, evaluator,
            checkpointer, periodic: actions.Actions, process_start: float) -> dict:
    """The results.json dict (and `history`, returned only) of a run that trained to `step`.

    Args:
        config: the run's configuration.
        state: its `TrainState`.
        span: its length.
        step: the step reached.
        source: where the data came from (`data.sources`), None for in-memory splits.
        evaluator: the trainer's `Evaluator` (the latest evaluations, the history).
        checkpointer: the trainer's `Checkpointer` (the latest checkpoint).
        periodic: the run's actions (the rate, the target and the best).
        process_start: `time.time()` at process start.
    """
    evaluations, keeper = evaluator.evaluations, periodic.keep_best.keeper
    rate = periodic.progress.steady_rate()
    return {
        "test_accuracy": evaluations["test"]["accuracy"],
        "test_loss": evaluations["test"]["loss"],
        "validation_accuracy": evaluations.get("validation", {}).get("accuracy"),
        "validation_loss": evaluations.get("validation", {}).get("loss"),
        "global_step": step,
        "epochs_completed": step // span.steps_per_epoch,
        "steps_per_epoch": span.steps_per_epoch,
        "wall_seconds": round(time.time() - process_start, 3),
        "train_examples_per_second": round(rate, 1) if rate else None,
        "params_sha256": params_sha256(state.model),
        # Which weights the metrics above are of; with --ema_decay, the averages'
        # digest too (the resume check of both).
        "weights": config.weights_kind,
        "ema_params_sha256": params_sha256(state.ema.model) if state.ema is not None else None,
        "num_parameters": state.model.num_parameters(),
        "data_source": source.kind if source else "in-memory",
        "data_dir": source.data_dir if source else None,
        "checkpoint": checkpointer.latest,
        # Set when --stop_at_test_accuracy ended the run: the step, the time
        # and the seconds since process start at which it was reached.
        "target_reached": periodic.stop_at_accuracy.reached,
        # With --keep_best: the best validation value, its step and checkpoint.
        "best": keeper.summary() if keeper is not None else None,
        # Set when --early_stopping_patience ended the run: its step and the patience.
        "stopped_early": periodic.keep_best.stopped,
        # Updates skipped for non-finite gradients (float16 or skip_step).
        "skipped_steps": int(state.loss_scale.skipped_steps.numpy()),
        "flags": config.to_dict(),
        "history": evaluator.history,
    }


def metrics_text(results: dict) -> str:
    """"step N, test accuracy A, test loss L, validation accuracy V", as the Done line says."""
    val = results.get("validation_accuracy")
    return (f"step {results['global_step']}, test accuracy {results['test_accuracy']:.2%}, "
            f"test loss {results['test_loss']:.4f}"
            + (f", validation accuracy {val:.2%}" if val is not None else ""))


def report(results: dict, write_dir: str, workdir: str, log) -> dict:
    """Writes results.json and logs the closing lines; returns `results`."""
    # The history covers this process's evaluations only (a resumed run's
    # earlier ones are in its summaries): it is returned, not recorded.
    workdirs.write_results(write_dir, {k: v for k, v in results.items() if k != "history"})
    log(f"Parameters: sha256 {results['params_sha256']}")
    best = results.get("best")
    if best:
        log(f"Best {best['metric']}: {best['value']:.4f} at step {best['step']} "
            f"({best['checkpoint']}; --checkpoint=best)")
    rate = results["train_examples_per_second"]
    log(f"Done: {metrics_text(results)}; "
        f"{'n/a' if rate is None else f'{rate:,.0f}'} train examples/s; "
        f"{results['wall_seconds']:.1f}s wall. Results: "
        + (os.path.join(workdir, workdirs.RESULTS_FILE) if write_dir == workdir
           else "written by the chief"))
    return results


def recorded_results(state, config: TrainConfig, span: actions.Span, workdir: str,
                     restored: str | None) -> dict | None:
    """The results.json of a complete run, or None if there is training (or finishing) to do.

    Complete: the restored checkpoint ended the run, and results.json records
    that very step. A checkpoint ends the run at or past the run's length,
    when its record of the best has run out of --early_stopping_patience
    (`ended_early`), or at the step results.json says --stop_at_test_accuracy
    was reached, with a test accuracy that meets this run's target. A longer
    --epochs/--train_steps (under --lr_schedule=constant), a larger patience or
    a higher target is not complete; nor is a run whose results.json is
    missing, unreadable or older than its checkpoint (it stopped between its
    last save and its results): it is finished as before.
    """
    step = state.step
    if not restored or (step < span.total_steps and not ended_early(state, config)
                        and not config.stop_at_test_accuracy):
        return None
    recorded = workdirs.read_results(workdir)
    if recorded is None or recorded.get("global_step") != step:
        return None
    if step >= span.total_steps or ended_early(state, config):
        return recorded
    reached = recorded.get("target_reached")
    if (isinstance(reached, dict) and reached.get("step") == step
            and recorded["test_accuracy"] >= config.stop_at_test_accuracy):
        return recorded
    return None


def ended_early(state, config: TrainConfig) -> bool:
    """Whether the state's record of the best has run out of --early_stopping_patience."""
    patience = config.early_stopping_patience
    return bool(state.best is not None and patience
                and int(state.best.stale.numpy()) >= patience)


def reevaluate(config: TrainConfig, state, span: actions.Span, evaluator, recorded: dict,
               workdir: str, restored: str, chief: bool, log) -> dict:
    """The re-run of a complete run: prints its recorded results and evaluates it afresh.

    results.json, config.json, the checkpoints and the summaries are the record
    of the run and stay byte for byte as they are; the fresh evaluation goes to
    reevaluation.json (written by the chief). Returns the recorded results.
    """
    step = state.step
    results_path = os.path.join(workdir, workdirs.RESULTS_FILE)
    rate = recorded.get("train_examples_per_second")
    log(f"Recorded results ({results_path}): {metrics_text(recorded)}"
        + (f"; {rate:,.0f} train examples/s" if rate else "")
        + (f"; {recorded['wall_seconds']:.1f}s wall" if recorded.get("wall_seconds") else ""))
    if step < span.total_steps and ended_early(state, config):
        why = (f"stopped early: {int(state.best.stale.numpy())} evaluations without a new "
               f"best {config.keep_best}; a larger --early_stopping_patience would train on")
    elif step < span.total_steps:
        why = (f"stopped at --stop_at_test_accuracy={config.stop_at_test_accuracy:g}; a higher "
               "one would train on")
    elif config.lr_schedule == "constant":
        why = "a larger --epochs or --train_steps would train on"
    else:
        why = "under --lr_schedule=cosine the length is fixed: train longer in another --workdir"
    log(f"Already trained to step {step} of {span.total_steps} ({why}); evaluating the "
        "restored model again. results.json, config.json and the summaries are left as "
        "they are")
    evaluator(step)
    fresh = {
        "global_step": step,
        "checkpoint": restored,
        **{f"{split}_{name}": evaluator.evaluations.get(split, {}).get(name)
           for split in ("test", "validation") for name in ("accuracy", "loss")},
        "params_sha256": params_sha256(state.model),
        "weights": config.weights_kind,
        "unix_time": round(time.time(), 3),
    }
    path = "written by the chief"
    if chief:
        path = workdirs.write_reevaluation(workdir, fresh)
    log(f"Parameters: sha256 {fresh['params_sha256']}")
    same = all(math.isclose(fresh[key], recorded.get(key) or 0.0, rel_tol=1e-5)
               for key in ("test_accuracy", "test_loss"))
    log(f"Re-evaluated: {metrics_text(fresh)}"
        + (" (as recorded)" if same else " (differs from the recorded results)")
        + f". Written: {path}")
    return recorded
