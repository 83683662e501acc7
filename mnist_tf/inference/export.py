"""Exporting a trained model as a SavedModel: the library behind `python -m mnist_tf.export`.

The SavedModel needs only TensorFlow to load (not this package):

    model = tf.saved_model.load(E)
    out = model.signatures["serving_default"](images=uint8_images)
    out["probabilities"]  # float32 [N, 10]
    out["classes"]        # int64 [N]

One signature, `serving_default`, takes uint8 `images` of unknown rank and
accepts both [N, 28, 28, 1] (TFDS's layout) and [N, 28, 28]; any other shape
fails with InvalidArgumentError naming the shape it got. Pixels are
normalised exactly as in training (x / 255, flattened to 784). The restored
object's `serve` function takes the same argument positionally.

`E/assets.extra/mnist_tf.json` records where the weights came from (workdir,
checkpoint, step, hidden sizes); TensorFlow ignores that directory.

The export is written into a temporary sibling of E and renamed into place,
so E is either absent or complete, never half-written. The sibling's name,
`.NAME.partial-HOST-PID-HEX`, says which process writes it: one left by a
killed export is removed by the next export to the same place.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mnist_tf import disk, files, quiet
from mnist_tf.constants import IMAGE_SIZE, normalize
from mnist_tf.errors import UserError

if TYPE_CHECKING:  # inference loads TensorFlow; only its type is needed here.
    from mnist_tf.inference.restore import LoadedModel

SIGNATURE_KEY = "serving_default"
METADATA_FILE = os.path.join("assets.extra", "mnist_tf.json")
# The exported model must reproduce the in-process one this closely, else the
# export is refused as broken (checked before it is moved into place).
VERIFY_TOLERANCE = 1e-5


def build_serving_module(model):
    """Wraps an `MLP` in a `tf.Module` whose `serve` function is the serving signature.

    Args:
        model: the trained `mnist_tf.model.mlp.MLP`.

    Returns:
        A `tf.Module` with attributes `model` and `serve` (a `tf.function`:
        uint8 images [N, 28, 28, 1] or [N, 28, 28] -> {"probabilities": float32
        [N, 10], "classes": int64 [N]}).
    """
    import tensorflow as tf

    def serve(images):
        shape = tf.shape(images)
        rank = tf.rank(images)
        # Pad the shape with 1s to at least 4 entries, so [N, 28, 28] and
        # [N, 28, 28, 1] both read as [N, 28, 28, 1] and the indexing below is
        # valid whatever the rank.
        padded = tf.concat([shape, tf.ones([tf.maximum(4 - rank, 0)], tf.int32)], axis=0)
        valid = tf.reduce_all(tf.stack([
            rank >= 3, rank <= 4, padded[1] == IMAGE_SIZE, padded[2] == IMAGE_SIZE,
            padded[3] == 1]))
        check = tf.debugging.Assert(valid, [
            "images must be uint8 [N, 28, 28, 1] or [N, 28, 28]; got shape", shape])
        with tf.control_dependencies([check]):
            pixels = normalize(images)  # The training normalisation, in the graph.
        probabilities = tf.nn.softmax(model(pixels, training=False))
        classes = tf.argmax(probabilities, axis=1, output_type=tf.int64)
        return {"probabilities": probabilities, "classes": classes}

    module = tf.Module(name="mnist_classifier")
    module.model = model  # Tracked, so its variables are saved with the function.
    module.serve = tf.function(
        serve, input_signature=[tf.TensorSpec(None, tf.uint8, name="images")])
    return module


def _check_export_dir(export_dir: str) -> str:
    """Returns the export dir's real path after checking it can be created; writes nothing.

    Symbolic links are resolved, so the export is renamed onto the directory
    a link names (rename(2) cannot replace the link itself with a directory):
    a link to an empty directory, or a dangling one, is used like that
    directory; a link to a non-empty one is refused like it.
    """
    if not export_dir:
        raise UserError("--export_dir: must not be empty")
    export_dir = os.path.realpath(export_dir)
    if os.path.exists(export_dir):
        if not os.path.isdir(export_dir):
            raise UserError(f"--export_dir: {export_dir} is a file, not a directory")
        if os.listdir(export_dir):
            raise UserError(f"--export_dir: {export_dir} already exists and is not empty; "
                            "choose a new directory (exports are never overwritten)")
    parent = os.path.dirname(export_dir)
    existing = parent
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--export_dir: cannot create {export_dir}: {existing} is not a "
                        "writable directory")
    return export_dir


def export_model(workdir: str, export_dir: str, checkpoint: str | None = None) -> dict:
    """Exports the workdir's latest (or the named) checkpoint as a SavedModel.

    Args:
        workdir: a training workdir.
        export_dir: the SavedModel directory to create; it must not exist or be
            empty.
        checkpoint: a checkpoint prefix; None means the latest in the workdir.

    Returns:
        What was exported: export_dir, workdir, checkpoint, step, hidden_sizes,
        signature (also written to `export_dir/assets.extra/mnist_tf.json`).

    Raises:
        UserError: if `export_dir` is non-empty or cannot be created, or the
            workdir holds no run.
        CheckpointError: for a missing, damaged or mismatched checkpoint.
    """
    # Checked before TensorFlow loads, so a refused export_dir fails at once.
    export_dir = _check_export_dir(export_dir)
    quiet.import_tensorflow()
    from mnist_tf.inference.restore import load_model

    workdir = os.path.abspath(workdir)
    loaded = load_model(workdir, checkpoint)
    return export_loaded(loaded, workdir, export_dir)


def export_loaded(loaded: LoadedModel, workdir: str, export_dir: str) -> dict:
    """Exports an already restored model as a SavedModel: the work behind `export_model`.

    `export_model` (the command line) and `mnist_tf.Classifier.export` both
    call this, so they write the same SavedModel and metadata.

    Args:
        loaded: an `inference.restore.LoadedModel` restored from `workdir`.
        workdir: the training workdir it came from (recorded in the metadata).
        export_dir: the SavedModel directory to create; it must not exist or be
            empty.

    Returns:
        What was exported (see `export_model`).

    Raises:
        UserError: if `export_dir` is non-empty or cannot be created.
    """
    # Checked again for export_model's sake: the directory may have filled
    # while the model loaded (the final rename refuses that case too).
    export_dir = _check_export_dir(export_dir)
    workdir = os.path.abspath(workdir)
    module = build_serving_module(loaded.model)
    metadata = {
        "export_dir": export_dir,
        "workdir": workdir,
        "checkpoint": loaded.checkpoint,
        "step": loaded.step,
        "weights": loaded.weights,
        "hidden_sizes": list(loaded.config.hidden_sizes),
        "signature": {
            "name": SIGNATURE_KEY,
            "inputs": {"images": "uint8 [N, 28, 28, 1] or [N, 28, 28]"},
            "outputs": {"probabilities": "float32 [N, 10]", "classes": "int64 [N]"},
        },
    }

    with publishing(export_dir) as partial:
        _write(module, metadata, loaded.model, partial)
    return metadata


def _write(module, metadata: dict, model, directory: str) -> None:
    """Writes the SavedModel and its metadata into `directory`, and verifies them."""
    import tensorflow as tf

    tf.saved_model.save(module, directory, signatures={
        SIGNATURE_KEY: module.serve.get_concrete_function()})
    os.makedirs(os.path.join(directory, os.path.dirname(METADATA_FILE)))
    files.write_json_atomic(os.path.join(directory, METADATA_FILE), metadata)
    _verify(directory, model)


@contextlib.contextmanager
def publishing(export_dir: str) -> Iterator[str]:
    """Yields a hidden sibling of `export_dir` to write an export into; then renames it there.

    The one protocol of every export format. The sibling is on the same
    filesystem, so the rename is atomic, and rename(2) replaces an empty
    directory but fails on a non-empty one, so a directory filled since it
    was checked is kept. The sibling is removed whatever goes wrong, and a
    sibling left by a killed export to the same place is removed first
    (`remove_stale_partials`). A full disk is one line (`disk.writing`).

    Raises:
        UserError: if the parent cannot be created or `export_dir` was filled
            since it was checked.
    """
    parent = os.path.dirname(export_dir)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise UserError(f"--export_dir: cannot create {parent}: {e.strerror}") from None
    with disk.writing(export_dir, "free space or use another --export_dir"):
        remove_stale_partials(export_dir)
        partial = os.path.join(parent, _partial_prefix(export_dir)
                               + f"{os.getpid()}-{uuid.uuid4().hex}")
        os.mkdir(partial)
        try:
            yield partial
            try:
                os.rename(partial, export_dir)
            except OSError as e:
                raise UserError(f"--export_dir: cannot move the export into {export_dir}: "
                                f"{e.strerror}") from None
        finally:
            if os.path.exists(partial):
                shutil.rmtree(partial)


def _partial_prefix(export_dir: str) -> str:
    """How this host's partial exports to `export_dir` are named: the prefix of `PID-HEX`."""
    return f".{os.path.basename(export_dir)}.partial-{socket.gethostname()}-"


def remove_stale_partials(export_dir: str) -> list[str]:
    """Removes partial exports to `export_dir` whose writer, on this host, is no longer running.

    An export killed outright (SIGKILL, out of memory, a power cut) cannot
    remove its hidden sibling, so the next export to the same place does.
    Only siblings named for `export_dir` and this host whose process is gone
    are removed; an export still running (its process alive, or a process now
    holding a reused pid), another host's on a shared filesystem, and every
    other entry are left alone.

    Returns:
        The paths removed.
    """
    parent = os.path.dirname(export_dir)
    pattern = re.compile(re.escape(_partial_prefix(export_dir)) + r"(\d+)-[0-9a-f]{32}$")
    removed = []
    for name in sorted(os.listdir(parent)):
        match = pattern.match(name)
        path = os.path.join(parent, name)
        if (match and os.path.isdir(path) and not os.path.islink(path)
                and not _is_running(int(match.group(1)))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _is_running(pid: int) -> bool:
    """Whether a process `pid` exists on this host (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Another user's process: it exists.
        return True
    return True


def _verify(saved_dir: str, model) -> None:
    """Checks that the SavedModel in `saved_dir` reproduces `model` on a few images."""
    import numpy as np
    import tensorflow as tf

    shape = (4, IMAGE_SIZE, IMAGE_SIZE, 1)
    images = (np.arange(np.prod(shape)) * 37 % 256).astype(np.uint8).reshape(shape)
    pixels = normalize(images)
    expected = tf.nn.softmax(model(pixels, training=False))
    signature = tf.saved_model.load(saved_dir).signatures[SIGNATURE_KEY]
    got = signature(images=tf.constant(images))["probabilities"]
    if not np.allclose(got.numpy(), expected.numpy(), atol=VERIFY_TOLERANCE, rtol=0):
        raise RuntimeError(f"the SavedModel written to {saved_dir} does not reproduce the "
                           "model; this is a bug in mnist_tf.export")
