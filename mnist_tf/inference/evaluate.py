"""Evaluation of a restored model on one split: results, their files and their report.

The metrics come from `training.evaluation.evaluate`, the pass the trainer
runs, through the same traced eval step (`steps.make_eval_step`), so
results.json, eval.json and `Classifier.evaluate` agree exactly.

Files written by `evaluate_checkpoint` (the test split keeps the plain names,
so evaluating the validation split never overwrites test results):

    W/eval.json                         split test
    W/eval_validation.json              split validation
    W/confusion_matrix_test.png         (or confusion_matrix_validation.png), titled
                                        with the run, split, step and accuracy
    W/eval/                             TensorBoard: the confusion-matrix image,
                                        tag confusion_matrix_<split>, at the
                                        checkpoint's step

This module never selects a matplotlib backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from mnist_tf import disk, files
from mnist_tf.choices import SPLITS
from mnist_tf.errors import UserError
from mnist_tf.inference.restore import LoadedModel
from mnist_tf.training import evaluation as training_evaluation

EVAL_SUBDIR = "eval"  # A TensorBoard run in WORKDIR, beside train/, validation/, test/.


def eval_json_name(split: str) -> str:
    """Returns the results file name of `split`: eval.json (test) or eval_<split>.json."""
    return "eval.json" if split == "test" else f"eval_{split}.json"


def confusion_png_name(split: str) -> str:
    """Returns the confusion-matrix PNG name of `split`."""
    return f"confusion_matrix_{split}.png"


def evaluate_checkpoint(
    workdir: str,
    split: str = "test",
    checkpoint: str | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    allow_download: bool = True,
    splits=None,
    log: Callable[[str], None] = print,
) -> dict:
    """Evaluates the workdir's latest (or the named) checkpoint on one split.

    The model is rebuilt with the architecture recorded in the workdir's
    config.json; the validation split is carved with the recorded
    `validation_size`, so it is exactly the examples the run validated on.

    Args:
        workdir: a training workdir.
        split: "test" or "validation".
        checkpoint: a checkpoint prefix (e.g. `W/checkpoints/ckpt-4290`); None
            means the latest in the workdir.
        data_dir: TFDS data directory (None: TFDS's default).
        manual_dir: optional directory with the official IDX files.
        allow_download: whether TFDS's own download may be tried.
        splits: preprocessed `pipeline.Splits` to use instead of loading MNIST
            (tests); must have been made with the run's `validation_size`.
        log: receives the data source's progress lines.

    Returns:
        The results, also written to `W/eval.json` (or `W/eval_<split>.json`):
        split, checkpoint, step, num_examples, loss, accuracy, per-class
        precision/recall/support (lists indexed by class), confusion_matrix
        (rows: true class, columns: predicted), hidden_sizes, data_dir and the
        paths of the files written.

    Raises:
        UserError: for an unknown split, a run without a validation split, an
            unusable workdir, or data problems (`DataError`).
        CheckpointError: for a missing, damaged or mismatched checkpoint.
    """
    # evaluate_loaded checks it again; here it fails before the checkpoint loads.
    if split not in SPLITS:
        raise UserError(f"--split: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    from mnist_tf.inference.restore import load_model

    workdir = os.path.abspath(workdir)
    loaded = load_model(workdir, checkpoint)
    return evaluate_loaded(loaded, workdir, split, data_dir=data_dir, manual_dir=manual_dir,
                           allow_download=allow_download, splits=splits, log=log,
                           write_files=True)


def evaluate_loaded(
    loaded: LoadedModel,
    workdir: str,
    split: str = "test",
    data_dir: str | None = None,
    manual_dir: str | None = None,
    allow_download: bool = True,
    splits=None,
    log: Callable[[str], None] = print,
    write_files: bool = False,
) -> dict:
    """Evaluates an already restored model on one split: the computation behind the CLI.

    `evaluate_checkpoint` (the command line) and `mnist_tf.Classifier.evaluate`
    both call this, so they report the same numbers.

    Args:
        loaded: an `inference.restore.LoadedModel` restored from `workdir`.
        workdir: the training workdir it came from (named in errors; the
            files go there).
        split: "test" or "validation".
        data_dir: TFDS data directory (None: TFDS's default).
        manual_dir: optional directory with the official IDX files.
        allow_download: whether TFDS's own download may be tried.
        splits: preprocessed `pipeline.Splits` to use instead of loading MNIST
            (tests); must have been made with the run's `validation_size`.
        log: receives the data source's progress lines.
        write_files: also write `eval[_<split>].json`, the confusion-matrix PNG
            and its TensorBoard image, and list them under `files`.

    Returns:
        The results (see `evaluate_checkpoint`); `files` only if `write_files`.

    Raises:
        UserError: for an unknown split, a run without a validation split, an
            unwritable workdir (with `write_files`), or data problems (`DataError`).
        NoSpaceError: if the disk fills while the files are written (each
            file is written atomically: the old one stays, or the new one is
            complete).
    """
    if split not in SPLITS:
        raise UserError(f"--split: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    from mnist_tf.data import pipeline, sources

    config = loaded.config
    if split == "validation" and config.validation_size == 0:
        raise UserError(
            f"--split=validation: the run in {workdir} was trained with validation_size=0, "
            "so it has no validation split; use --split=test")
    # Before the data is loaded, so an unusable workdir fails at once.
    if write_files and not os.access(workdir, os.W_OK | os.X_OK):
        raise UserError(f"--workdir: {workdir} is not writable; {eval_json_name(split)} "
                        "is written there")

    used_data_dir = None
    if splits is None:
        source = sources.ensure_mnist(data_dir, manual_dir, allow_download, log=log)
        used_data_dir = source.data_dir
        splits = pipeline.load_splits(source.data_dir, config.validation_size)
    elif splits.num_validation != config.validation_size:
        raise ValueError(f"splits has {splits.num_validation} validation examples; the run "
                         f"in {workdir} used validation_size={config.validation_size}")
    examples = splits.test if split == "test" else splits.validation

    evaluation = evaluate_model(loaded.model, examples, config.eval_batch_size,
                                config.jit_compile)
    matrix = evaluation.confusion
    precision, recall = evaluation.precision, evaluation.recall
    results = {
        "split": split,
        "checkpoint": loaded.checkpoint,
        "step": loaded.step,
        "weights": loaded.weights,
        "num_examples": int(matrix.sum()),
        "loss": evaluation.loss,
        "accuracy": evaluation.accuracy,
        "precision": [float(p) for p in precision],
        "recall": [float(r) for r in recall],
        "support": [int(s) for s in matrix.sum(axis=1)],
        "confusion_matrix": matrix.tolist(),
        "hidden_sizes": list(config.hidden_sizes),
        "data_dir": used_data_dir,
    }
    if write_files:
        with disk.writing(workdir, "free space on its device (evaluate writes its results "
                          "into --workdir)"):
            _write_results(workdir, results, matrix)
    return results


def _write_results(workdir: str, results: dict, matrix) -> None:
    """Writes the PNG, the TensorBoard image and the JSON; adds their paths as `files`."""
    from mnist_tf import images
    from mnist_tf.training import summaries

    split = results["split"]
    json_path = os.path.join(workdir, eval_json_name(split))
    png_path = os.path.join(workdir, confusion_png_name(split))
    summary_dir = os.path.join(workdir, summaries.SUMMARY_SUBDIR, EVAL_SUBDIR)
    results["files"] = {"results": json_path, "confusion_matrix_png": png_path,
                        "summaries": summary_dir}
    picture = images.confusion_matrix_image(matrix, title=confusion_title(workdir, results))
    images.write_png(png_path, picture)
    _write_image_summary(summary_dir, f"confusion_matrix_{split}", picture, results["step"])
    # Written last: a results file on disk means the other outputs are there too.
    files.write_json_atomic(json_path, results)


def confusion_title(workdir: str, results: dict) -> str:
    """The confusion-matrix picture's title: run (the workdir's name), split, step, accuracy.

    Two lines, e.g. `default: test split, step 4290` and `accuracy 98.31%
    (9831/10000 right)`, so a PNG copied out of its workdir still says what it
    shows, and the picture stays narrow enough for TensorBoard's image cards.
    """
    run = os.path.basename(os.path.abspath(workdir))
    correct = int(sum(row[k] for k, row in enumerate(results["confusion_matrix"])))
    return (f"{run}: {results['split']} split, step {results['step']}\n"
            + training_evaluation.accuracy_title(correct, results["num_examples"]))


def _write_image_summary(summary_dir: str, tag: str, picture, step: int) -> None:
    import tensorflow as tf

    writer = tf.summary.create_file_writer(summary_dir)
    try:
        with writer.as_default(step=max(step, 0)):
            tf.summary.image(tag, picture[None], description=(
                "Confusion matrix written by `python -m mnist_tf.evaluate` (its title names "
                "the run, split, checkpoint step and accuracy): rows are the true digits, "
                "columns the model's predictions, each cell a count of images; the diagonal "
                "is green, errors red by their share of the row."))
    finally:
        writer.close()


def format_report(results: dict) -> str:
    """Renders `evaluate_checkpoint`'s results as the text the command line prints."""
    from mnist_tf.analysis import format_confusion_matrix

    matrix = np.asarray(results["confusion_matrix"])
    correct = int(np.trace(matrix))
    lines = [
        f"Checkpoint: {results['checkpoint']} (step {results['step']}, hidden sizes "
        f"{results['hidden_sizes']}, {results.get('weights', 'trained')} weights)",
        f"Split: {results['split']}, {results['num_examples']} examples",
        f"Loss {results['loss']:.4f}, accuracy {results['accuracy']:.2%} "
        f"({correct}/{results['num_examples']} correct)",
        "",
        "Per class (precision: right / predicted as the class; recall: right / images of "
        "the class):",
        f"{'class':>5} {'precision':>10} {'recall':>8} {'support':>8}",
    ]
    for k, (p, r, s) in enumerate(zip(results["precision"], results["recall"],
                                      results["support"])):
        lines.append(f"{k:>5} {p:>10.2%} {r:>8.2%} {s:>8}")
    lines.append(f"{'mean':>5} {np.mean(results['precision']):>10.2%} "
                 f"{np.mean(results['recall']):>8.2%} {sum(results['support']):>8}")
    lines += ["", "Confusion matrix (rows: true class, columns: predicted class):",
              format_confusion_matrix(matrix)]
    return "\n".join(lines)


def evaluate_model(model, examples, batch_size: int,
                   jit_compile: bool = False) -> training_evaluation.Evaluation:
    """Evaluates `model` on `examples` through the trainer's traced eval step.

    Args:
        model: the MLP to evaluate.
        examples: the split's `pipeline.Examples`.
        batch_size: the eval step's static batch size (the run's `eval_batch_size`).
        jit_compile: compile the step with XLA, as the run did.

    Returns:
        The analysed `training.evaluation.Evaluation` (loss, accuracy,
        confusion matrix, precision and recall), with no misclassified images kept.
    """
    from mnist_tf.data import pipeline
    from mnist_tf.training.steps import Metrics, make_eval_step

    metrics = Metrics(name="eval_metrics")
    step = make_eval_step(model, metrics, batch_size, jit_compile, examples.images.dtype)
    return training_evaluation.evaluate(step, metrics, pipeline.eval_batches(examples, batch_size),
                                        max_mistakes=0)
