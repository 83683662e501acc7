"""Size, test accuracy and latency of each export format of trained runs.

    python benchmarks/tflite_formats.py --workdirs=runs/default,runs/best

For each workdir the latest checkpoint is exported, into a temporary
directory, as the float32 SavedModel (the reference) and as a .tflite file in
every --quantize mode (`mnist_tf.inference.tflite`, which verifies each on the
test split). Then, on the whole test split:

- size: the SavedModel directory's files, or the .tflite file, in KB (1,024 bytes);
- accuracy: the SavedModel through its `serving_default` signature, each
  .tflite file through LiteRT's interpreter (its defaults: the XNNPACK
  delegate, its own thread count);
- latency: the median over --latency_images single-image calls (after
  --warmup calls), and the time per image of batches of 1,000.

Prints the machine it ran on, a Markdown table (one row per run and format),
then one JSON line of the same figures.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import flags, logging  # noqa: E402

from mnist_tf import cli  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_list("workdirs", None, "Trained workdirs to export (their latest checkpoints).")
    flags.DEFINE_integer("latency_images", 1000, "Single-image calls timed per format.")
    flags.DEFINE_integer("warmup", 50, "Untimed single-image calls first.")
    cli.define_data_flags()
    flags.mark_flag_as_required("workdirs")


def directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(path) for name in names)


def timings(call, images) -> tuple[float, float]:
    """(median ms of one single-image call, ms per image at batch 1,000)."""
    for image in images[:FLAGS.warmup]:
        call(image[None])
    single = []
    for image in images[:FLAGS.latency_images]:
        start = time.perf_counter()
        call(image[None])
        single.append(time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(0, len(images), 1000):
        call(images[i:i + 1000])
    batched = (time.perf_counter() - start) / len(images)
    return statistics.median(single) * 1e3, batched * 1e3


def direct_call(interpreter):
    """Runs a batch straight through the interpreter: what an app's inference loop does.

    `tflite.run` silences stderr around each call, which would be timed too.
    """
    inputs = interpreter.get_input_details()[0]["index"]
    outputs = interpreter.get_output_details()[0]["index"]
    shape = [1]

    def call(batch):
        if len(batch) != shape[0]:
            shape[0] = len(batch)
            interpreter.resize_tensor_input(inputs, [len(batch), 28, 28])
            interpreter.allocate_tensors()
        interpreter.set_tensor(inputs, batch)
        interpreter.invoke()
        return interpreter.get_tensor(outputs)

    return call


def measure_workdir(workdir: str, splits, root: str) -> list[dict]:
    import numpy as np
    import tensorflow as tf

    from mnist_tf.choices import QUANTIZE
    from mnist_tf.inference import export, tflite
    from mnist_tf.inference.restore import load_model

    loaded = load_model(workdir)
    images = splits.test.images.numpy().reshape(-1, 28, 28)
    labels = splits.test.labels.numpy()
    rows = []
    saved_dir = os.path.join(root, "saved_model")
    export.export_loaded(loaded, workdir, saved_dir)
    serve = tf.saved_model.load(saved_dir).signatures[export.SIGNATURE_KEY]

    def call_saved(batch):
        return serve(images=tf.constant(batch))["probabilities"].numpy()

    predicted = np.concatenate([call_saved(images[i:i + 1000]) for i in range(0, len(images),
                                                                              1000)])
    rows.append({"format": "SavedModel float32", "bytes": directory_bytes(saved_dir),
                 "accuracy": float(np.mean(predicted.argmax(axis=1) == labels)),
                 "timings": timings(call_saved, images)})
    for mode in QUANTIZE:
        metadata = tflite.export_loaded_tflite(loaded, workdir, os.path.join(root, mode), mode,
                                               splits)
        interpreter = tflite.make_interpreter(path=metadata["path"])
        tflite.run(interpreter, images[:1])  # Allocates (the delegate's notice, silenced).
        call_tflite = direct_call(interpreter)

        rows.append({"format": f"tflite {mode}", "bytes": metadata["size_bytes"],
                     "accuracy": metadata["verification"]["tflite_accuracy"],
                     "calibration": metadata["calibration_images"],
                     "timings": timings(call_tflite, images)})
    return rows


def main(argv):
    del argv
    logging.set_verbosity(logging.ERROR)  # TF's SavedModel INFO lines.
    cli.import_tensorflow_quietly()
    from common import describe_cpu, machine

    from mnist_tf.data import pipeline, sources
    from mnist_tf.inference.restore import load_model

    source = sources.ensure_mnist(FLAGS.data_dir, FLAGS.manual_dir, FLAGS.download)
    where = machine()
    print(describe_cpu(where))
    print("| run | format | size (KB) | size / float32 tflite | test accuracy | "
          "vs SavedModel (points) | latency, 1 image (ms) | per image, batch 1,000 (ms) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    figures = []
    for workdir in FLAGS.workdirs:
        workdir = os.path.abspath(workdir)
        splits = pipeline.load_splits(source.data_dir, load_model(workdir).config.validation_size)
        with tempfile.TemporaryDirectory() as root:
            rows = measure_workdir(workdir, splits, root)
        reference = rows[0]["accuracy"]
        float_bytes = rows[1]["bytes"]
        for row in rows:
            single, batched = row["timings"]
            print(f"| {os.path.basename(workdir)} | {row['format']} | {row['bytes'] / 1024:,.1f} "
                  f"| {row['bytes'] / float_bytes:.0%} | {row['accuracy']:.2%} | "
                  f"{(row['accuracy'] - reference) * 100:+.2f} | {single:.3f} | "
                  f"{batched:.4f} |")
            figures.append({"workdir": workdir, **row, "latency_ms": single,
                            "batched_ms_per_image": batched})
    print(json.dumps({"machine": where, "figures": figures}))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
