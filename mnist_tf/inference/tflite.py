"""Exporting a trained model as a LiteRT (TensorFlow Lite) flatbuffer, and running one.

The library behind `python -m mnist_tf.export --format=tflite` and
`python -m mnist_tf.evaluate --tflite=PATH`. An export to E writes

    E/model.tflite    the flatbuffer: uint8 images [N, 28, 28] -> probabilities [N, 10]
    E/mnist_tf.json   where it came from, how it was quantized, how it scored

The model takes raw pixels as the SavedModel signature does: the training
normalisation (`constants.normalize`, a 256-entry table lookup) is inside the
graph, so a caller feeds uint8 pixels and nothing else. `--quantize` picks
the post-training quantization (the TFLite converter's own recipes):

    none     float32 weights and arithmetic: the checkpoint's predictions
    float16  float16 weights, float32 arithmetic
    dynamic  int8 weights, activations quantized on the fly
    int8     int8 weights and activations (full-integer), calibrated on the
             first CALIBRATION_IMAGES training images; the output is int8
             probabilities: p = scale * (q - zero_point)

Calibration takes images from the start of the train split: the validation
split is carved from its end, and the test split is never read for it.

Before it is moved into place an export is verified with the LiteRT
interpreter (`ai_edge_litert`; `tf.lite.Interpreter` is deprecated) on the
whole test split, beside the checkpoint's own accuracy. The file is written
into a hidden sibling directory of E and renamed into place exactly like the
SavedModel (`inference.export`), so E is absent or complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from typing import TYPE_CHECKING

import numpy as np

from mnist_tf import files, quiet
from mnist_tf.choices import QUANTIZE
from mnist_tf.constants import IMAGE_SIZE, NUM_CLASSES, normalize
from mnist_tf.errors import UserError
from mnist_tf.inference import export as saved_model_export

if TYPE_CHECKING:  # inference loads TensorFlow; only its type is needed here.
    from mnist_tf.inference.restore import LoadedModel

TFLITE_FILE = "model.tflite"
METADATA_FILE = "mnist_tf.json"
# Training images the int8 calibration runs: a few hundred cover the
# activation ranges of a dense MNIST model (more changed no test prediction).
CALIBRATION_IMAGES = 500
# Images per interpreter call when a split is run.
BATCH_SIZE = 1000
# How far the probabilities of a "none" export may stray from the checkpoint's
# (float32 either way; the kernels sum in another order) and of a "float16"
# one (its weights are rounded to 11 significant bits).
FLOAT_TOLERANCE = {"none": 1e-5, "float16": 2e-2}
# A quantized export may lose at most this much test accuracy before it is
# refused: more means the quantization broke the model, not that it rounded.
MAX_ACCURACY_DROP = 0.05

# Lines that the converter and the interpreter write to file descriptor 2,
# past Python's logging: C++ log lines, the converter's quantizer summary,
# LiteRT's delegate notice and MLIR's location dumps.
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWE]\d{4} |"
    r"fully_quantize: |INFO: |loc\(|\s+(see current operation|note: ))")


@contextlib.contextmanager
def silenced():
    """Quiets TensorFlow's and LiteRT's Python warnings and C++ notices inside the block.

    MNIST_TF_VERBOSE=1 keeps them.
    """
    if os.environ.get("MNIST_TF_VERBOSE"):
        yield
        return
    with quiet.quiet(), warnings.catch_warnings(), quiet._filtered_stderr(_NOISE):
        warnings.simplefilter("ignore")
        yield


def build_tflite_function(model):
    """The concrete function converted: uint8 images [N, 28, 28] -> {"probabilities": [N, 10]}."""
    import tensorflow as tf

    @tf.function(input_signature=[
        tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE], tf.uint8, name="images")])
    def serve(images):
        return {"probabilities": tf.nn.softmax(model(normalize(images), training=False))}

    return serve.get_concrete_function()


def convert(model, quantize: str, calibration_images: np.ndarray | None = None) -> bytes:
    """Converts `model` to a TFLite flatbuffer with the named post-training quantization.

    A `--deskew` model's int8 export keeps the deskew stage in float (see
    `_convert_int8_dense_only`): the rest is full-integer.

    Args:
        model: the trained `MLP`.
        quantize: one of `choices.QUANTIZE`.
        calibration_images: uint8 [N, 28, 28] training images; required for "int8".

    Returns:
        The flatbuffer's bytes.
    """
    import tensorflow as tf

    if quantize not in QUANTIZE:
        raise UserError(f"--quantize: unknown mode {quantize!r}; choose one of "
                        f"{', '.join(QUANTIZE)}")
    if quantize == "int8" and (calibration_images is None or not len(calibration_images)):
        raise ValueError("int8 quantization needs calibration images")

    def representative_dataset():
        for image in calibration_images:
            yield [image[None]]

    with silenced():
        function = build_tflite_function(model)
        if quantize == "int8" and model.deskew:
            return _convert_int8_dense_only(model, function, representative_dataset)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            converter.representative_dataset = representative_dataset
            # Integer kernels only: a float op left over fails the conversion
            # instead of silently running in float.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_output_type = tf.int8
        return converter.convert()


def _convert_int8_dense_only(model, function, representative_dataset) -> bytes:
    """int8 for the dense layers and softmax; the pixel lookup and deskew stay float32.

    Deskewing divides image moments and resamples at the coordinates they
    give; quantized to 256 levels those coordinates land on the wrong pixels
    (full-integer export of a `--deskew` model measured 27 % test accuracy).
    So every op but FULLY_CONNECTED and SOFTMAX is kept float (the
    converter's selective quantization, `QuantizationDebugger`'s denylist),
    and the output is float32: the weights, which are nearly all the file,
    are int8 either way.
    """
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as saved_dir:
        # The debugger re-converts from a SavedModel (it fails on concrete functions).
        module = tf.Module()
        module.model = model
        tf.saved_model.save(module, saved_dir, signatures={"serving_default": function})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_dir)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        full = converter.convert()
        interpreter = make_interpreter(full)
        float_ops = sorted({op["op_name"] for op in interpreter._get_ops_details()}
                           - {"FULLY_CONNECTED", "SOFTMAX", "QUANTIZE", "DEQUANTIZE"})
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative_dataset,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(
                denylisted_ops=float_ops))
        return debugger.get_nondebug_quantized_model()


def make_interpreter(model_content: bytes | None = None, path: str | None = None):
    """A LiteRT interpreter for a flatbuffer given as bytes or a file path."""
    with silenced():
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter(model_content=model_content, model_path=path)


def describe_io(interpreter) -> dict:
    """The model's input and output: dtype, shape, and scale and zero point if quantized."""
    described = {}
    for role, details in (("input", interpreter.get_input_details()[0]),
                          ("output", interpreter.get_output_details()[0])):
        scale, zero_point = details["quantization"]
        described[role] = {"dtype": np.dtype(details["dtype"]).name,
                           # -1: any batch size.
                           "shape": [int(n) for n in details["shape_signature"]]}
        if scale:
            described[role].update(scale=float(scale), zero_point=int(zero_point))
    return described


def run(interpreter, images: np.ndarray, batch_size: int = BATCH_SIZE) -> tuple[np.ndarray,
                                                                                np.ndarray]:
    """Runs uint8 images [N, 28, 28(, 1)] through the interpreter in batches.

    Returns:
        (raw, probabilities): the output tensor as the model gives it (int8
        for an int8 export) and float32 probabilities [N, 10] (dequantized
        with the output's scale and zero point).
    """
    images = np.asarray(images, np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    inputs, outputs = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    raw = np.zeros((len(images), NUM_CLASSES), outputs["dtype"])
    size = None
    with silenced():
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            if len(batch) != size:
                size = len(batch)
                interpreter.resize_tensor_input(inputs["index"], [size, IMAGE_SIZE, IMAGE_SIZE])
                interpreter.allocate_tensors()
            interpreter.set_tensor(inputs["index"], batch)
            interpreter.invoke()
            raw[start:start + size] = interpreter.get_tensor(outputs["index"])
    scale, zero_point = outputs["quantization"]
    probabilities = raw.astype(np.float32)
    if scale:
        probabilities = (probabilities - zero_point) * np.float32(scale)
    return raw, probabilities


def checkpoint_probabilities(model, images: np.ndarray) -> np.ndarray:
    """The checkpoint's float32 probabilities for uint8 images, as the SavedModel gives them."""
    import tensorflow as tf

    images = np.asarray(images, np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return np.concatenate([
        tf.nn.softmax(model(normalize(images[i:i + BATCH_SIZE]), training=False)).numpy()
        for i in range(0, len(images), BATCH_SIZE)]) if len(images) else np.zeros((0, NUM_CLASSES))


def calibration_set(train_images, count: int = CALIBRATION_IMAGES) -> np.ndarray:
    """The first `count` training images as uint8 [count, 28, 28] (all, if fewer)."""
    images = np.asarray(train_images)[:count]
    return images.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)


def export_tflite(workdir: str, export_dir: str, quantize: str = "none",
                  checkpoint: str | None = None, data_dir: str | None = None,
                  manual_dir: str | None = None, allow_download: bool = True,
                  splits=None, log=print) -> dict:
    """Exports the workdir's latest (or the named) checkpoint as `export_dir/model.tflite`.

    Args:
        workdir: a training workdir.
        export_dir: the directory to create; it must not exist or be empty.
        quantize: one of `choices.QUANTIZE`.
        checkpoint: "latest"/None, "best" or a checkpoint prefix.
        data_dir: TFDS data directory (None: TFDS's default). Calibration
            reads the train split, verification the test split.
        manual_dir: optional directory with the official IDX files.
        allow_download: whether TFDS's own download may be tried.
        splits: preprocessed `pipeline.Splits` to use instead of loading MNIST
            (tests); made with the run's `validation_size`.
        log: receives the data source's progress lines.

    Returns:
        The metadata, also written to `export_dir/mnist_tf.json`: export_dir,
        path (the .tflite file), size_bytes, quantize, calibration_images,
        integer_only (int8 arithmetic throughout), input/output (dtype,
        shape, scale, zero_point), the checkpoint's workdir, checkpoint,
        step, hidden_sizes, validation_size, and
        verification (num_examples, tflite_accuracy, checkpoint_accuracy,
        agreement, max_abs_difference).

    Raises:
        UserError: for an unusable export_dir, an unknown mode, data problems,
            or a quantized model that lost more than MAX_ACCURACY_DROP.
        CheckpointError: for a missing, damaged or mismatched checkpoint.
    """
    if quantize not in QUANTIZE:
        raise UserError(f"--quantize: unknown mode {quantize!r}; choose one of "
                        f"{', '.join(QUANTIZE)}")
    export_dir = saved_model_export._check_export_dir(export_dir)
    quiet.import_tensorflow()
    from mnist_tf.inference.restore import load_model

    workdir = os.path.abspath(workdir)
    loaded = load_model(workdir, checkpoint)
    if splits is None:
        from mnist_tf.data import pipeline, sources

        source = sources.ensure_mnist(data_dir, manual_dir, allow_download, log=log)
        splits = pipeline.load_splits(source.data_dir, loaded.config.validation_size)
    return export_loaded_tflite(loaded, workdir, export_dir, quantize, splits)


def export_loaded_tflite(loaded: LoadedModel, workdir: str, export_dir: str, quantize: str,
                         splits) -> dict:
    """Converts, verifies on the test split and writes an already restored model.

    See `export_tflite` for the arguments, result and errors; `splits` holds
    the train split (calibration) and the test split (verification).
    """
    export_dir = saved_model_export._check_export_dir(export_dir)
    calibration = (calibration_set(splits.train.images.numpy()) if quantize == "int8"
                   else None)
    content = convert(loaded.model, quantize, calibration)
    metadata = {
        "export_dir": export_dir,
        "path": os.path.join(export_dir, TFLITE_FILE),
        "format": "tflite",
        "quantize": quantize,
        "size_bytes": len(content),
        "calibration_images": 0 if calibration is None else len(calibration),
        "calibration_split": None if calibration is None else "train (its first images)",
        # A --deskew model's int8 export keeps its deskew stage float (convert).
        "integer_only": quantize == "int8" and not loaded.model.deskew,
        "workdir": workdir,
        "checkpoint": loaded.checkpoint,
        "step": loaded.step,
        "weights": loaded.weights,
        "hidden_sizes": list(loaded.config.hidden_sizes),
        "validation_size": loaded.config.validation_size,
    }
    # The SavedModel's protocol: a hidden sibling, verified, renamed into place.
    with saved_model_export.publishing(export_dir) as partial:
        _write(content, metadata, loaded.model, splits.test, partial)
    return metadata


def _write(content: bytes, metadata: dict, model, test, directory: str) -> None:
    """Writes the flatbuffer into `directory`, verifies it with LiteRT, then its metadata."""
    path = os.path.join(directory, TFLITE_FILE)
    with open(path, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    interpreter = make_interpreter(path=path)
    metadata.update(describe_io(interpreter))
    metadata["verification"] = verify(interpreter, model, test, metadata["quantize"])
    files.write_json_atomic(os.path.join(directory, METADATA_FILE), metadata)


def verify(interpreter, model, test, quantize: str) -> dict:
    """Runs the whole test split through the interpreter and the checkpoint; compares them.

    Raises:
        RuntimeError: if a float export strays from the checkpoint's
            probabilities (a bug in the export).
        UserError: if a quantized export lost more than MAX_ACCURACY_DROP.
    """
    images, labels = test.images.numpy(), test.labels.numpy()
    _, got = run(interpreter, images)
    expected = checkpoint_probabilities(model, images)
    tflite_accuracy = float(np.mean(got.argmax(axis=1) == labels))
    checkpoint_accuracy = float(np.mean(expected.argmax(axis=1) == labels))
    difference = float(np.abs(got - expected).max()) if len(images) else 0.0
    if quantize in FLOAT_TOLERANCE and difference > FLOAT_TOLERANCE[quantize]:
        raise RuntimeError(f"the --quantize={quantize} export differs from the checkpoint by "
                           f"{difference:.3g} in a probability; this is a bug in mnist_tf.export")
    if checkpoint_accuracy - tflite_accuracy > MAX_ACCURACY_DROP:
        raise UserError(f"--quantize={quantize}: the export's test accuracy "
                        f"{tflite_accuracy:.2%} is {checkpoint_accuracy - tflite_accuracy:.2%} "
                        f"below the checkpoint's {checkpoint_accuracy:.2%}; nothing was "
                        "exported; use --quantize=dynamic or float16")
    return {"split": "test", "num_examples": len(labels), "tflite_accuracy": tflite_accuracy,
            "checkpoint_accuracy": checkpoint_accuracy,
            "agreement": float(np.mean(got.argmax(axis=1) == expected.argmax(axis=1))),
            "max_abs_difference": difference}


def resolve_tflite_path(path: str) -> tuple[str, dict | None]:
    """The .tflite file `--tflite=PATH` names (the file or its export directory), and its metadata.

    Raises:
        UserError: if PATH does not exist, holds no model.tflite, or lies in
            an unfinished export (a `.NAME.partial-...` directory).
    """
    if not path:
        raise UserError("--tflite: must not be empty")
    path = os.path.abspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, TFLITE_FILE)
    if not os.path.isfile(path):
        raise UserError(f"--tflite: {path} does not exist; give a .tflite file or the "
                        "--export_dir of a --format=tflite export")
    if ".partial-" in os.path.basename(os.path.dirname(path)):
        raise UserError(f"--tflite: {path} is in an unfinished export (it was interrupted); "
                        "export again")
    metadata_path = os.path.join(os.path.dirname(path), METADATA_FILE)
    metadata = None
    if os.path.isfile(metadata_path):
        with open(metadata_path) as f:
            metadata = json.load(f)
    return path, metadata


def evaluate_tflite(path: str, split: str = "test", data_dir: str | None = None,
                    manual_dir: str | None = None, allow_download: bool = True,
                    splits=None, log=print) -> dict:
    """Evaluates an exported .tflite file on one split with the LiteRT interpreter.

    The validation split is carved with the `validation_size` the export's
    metadata records (the run's); a file without metadata can be evaluated on
    the test split only.

    Args:
        path: the .tflite file, or the export directory holding it.
        split: "test" or "validation".
        data_dir: TFDS data directory (None: TFDS's default).
        manual_dir: optional directory with the official IDX files.
        allow_download: whether TFDS's own download may be tried.
        splits: preprocessed `pipeline.Splits` to use instead of loading MNIST (tests).
        log: receives the data source's progress lines.

    Returns:
        path, quantize, split, num_examples, accuracy, loss (mean cross-entropy;
        None for an int8 output, whose probabilities round small values to
        0), precision, recall, support, confusion_matrix, input and output.

    Raises:
        UserError: for a bad path or split, or data problems.
    """
    path, metadata = resolve_tflite_path(path)
    validation_size = (metadata or {}).get("validation_size")
    if split == "validation" and not validation_size:
        raise UserError(f"--split=validation: {path} records no validation split (its run had "
                        "none, or its mnist_tf.json is missing); use --split=test")
    try:
        interpreter = make_interpreter(path=path)
    except ValueError as e:
        raise UserError(f"--tflite: {path} is not a TFLite model: "
                        f"{str(e).splitlines()[0]}") from None
    if splits is None:
        from mnist_tf.data import pipeline, sources

        source = sources.ensure_mnist(data_dir, manual_dir, allow_download, log=log)
        splits = pipeline.load_splits(source.data_dir, validation_size or 0)
    examples = splits.test if split == "test" else splits.validation
    labels = examples.labels.numpy().astype(np.int64)
    raw, probabilities = run(interpreter, examples.images.numpy())
    predicted = probabilities.argmax(axis=1)
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    loss = None
    if raw.dtype == np.float32:
        picked = probabilities[np.arange(len(labels)), labels]
        loss = float(np.mean(-np.log(np.maximum(picked, np.finfo(np.float32).tiny))))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(np.diag(matrix) / matrix.sum(axis=0))
        recall = np.nan_to_num(np.diag(matrix) / matrix.sum(axis=1))
    return {"path": path, "quantize": (metadata or {}).get("quantize"), "split": split,
            "num_examples": len(labels), "accuracy": float(np.mean(predicted == labels)),
            "loss": loss, "precision": precision.tolist(), "recall": recall.tolist(),
            "support": matrix.sum(axis=1).tolist(), "confusion_matrix": matrix.tolist(),
            **describe_io(interpreter)}


def format_tflite_export(exported: dict) -> str:
    """What `--format=tflite` prints: the file, its quantization, and its verification."""
    lines = [f"Exported {exported['checkpoint']} (step {exported['step']}, hidden sizes "
             f"{exported['hidden_sizes']}, {exported['weights']} weights) to "
             f"{exported['path']} ({exported['size_bytes'] / 1024:.1f} KB, "
             f"--quantize={exported['quantize']})"]
    if exported["calibration_images"]:
        lines.append(f"Calibrated on {exported['calibration_images']} training images "
                     "(the first of the train split; no test image)")
    if exported["quantize"] == "int8" and not exported["integer_only"]:
        lines.append("Dense layers and softmax in int8; the pixel lookup and --deskew's "
                     "resampling stay float32, and so does the output")
    for role in ("input", "output"):
        io = exported[role]
        quantized = (f", scale {io['scale']:.6g}, zero point {io['zero_point']}"
                     if "scale" in io else "")
        lines.append(f"{role.capitalize()}: {io['dtype']} {io['shape']}{quantized}")
    check = exported["verification"]
    lines.append(f"Verified with LiteRT on the {check['num_examples']} test images: accuracy "
                 f"{check['tflite_accuracy']:.2%} (the checkpoint: "
                 f"{check['checkpoint_accuracy']:.2%}; same class for "
                 f"{check['agreement']:.2%})")
    return "\n".join(lines)


def format_tflite_report(results: dict) -> str:
    """Renders `evaluate_tflite`'s results as the text `evaluate --tflite` prints."""
    from mnist_tf.analysis import format_confusion_matrix

    matrix = np.asarray(results["confusion_matrix"])
    output = results["output"]
    quantized = (f", scale {output['scale']:.6g}, zero point {output['zero_point']}"
                 if "scale" in output else "")
    loss = (f"Loss {results['loss']:.4f}, " if results["loss"] is not None
            else "Loss not reported (int8 probabilities round small values to 0); ")
    lines = [
        f"TFLite model: {results['path']} (quantize {results['quantize'] or 'unknown'}; "
        f"input {results['input']['dtype']}, output {output['dtype']}{quantized})",
        f"Split: {results['split']}, {results['num_examples']} examples",
        f"{loss}accuracy {results['accuracy']:.2%} ({int(np.trace(matrix))}/"
        f"{results['num_examples']} correct)",
        "",
        f"{'class':>5} {'precision':>10} {'recall':>8} {'support':>8}",
    ]
    for k, (p, r, s) in enumerate(zip(results["precision"], results["recall"],
                                      results["support"])):
        lines.append(f"{k:>5} {p:>10.2%} {r:>8.2%} {s:>8}")
    lines += ["", "Confusion matrix (rows: true class, columns: predicted class):",
              format_confusion_matrix(matrix)]
    return "\n".join(lines)
