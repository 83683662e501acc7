"""Resources: a full disk, a run too large for memory, too many CPU replicas, signals that
must end a run, and export's destination (a symbolic link, partials left by a killed export)."""

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from conftest import REPO, assert_usage_error, run_module

from mnist_tf import config as configs
from mnist_tf import disk, export, memory
from mnist_tf.config import ConfigError, TrainConfig
from mnist_tf.errors import UserError

TINY = dict(hidden_sizes=(8,), batch_size=32, train_steps=2, jit_compile=False,
            validation_size=0, eval_batch_size=100)
# A checkpoint of ~600 KB (weights and Adam's slots), larger than the disk's last free bytes.
WIDE = dict(TINY, hidden_sizes=(64,))
CLI_FLAGS = ("--nojit_compile", "--validation_size=0", "--batch_size=32", "--nodownload")


def train(workdir, data_dir, **settings):
    from mnist_tf.training import trainer

    return trainer.train_and_evaluate(TrainConfig(**settings), str(workdir), data_dir=data_dir,
                                      allow_download=False, log=lambda line: None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_data_dir):
    """A tiny trained workdir, for the exports."""
    workdir = tmp_path_factory.mktemp("run")
    train(workdir, small_data_dir, **TINY)
    return workdir


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs (we run as root); skipped where it cannot be mounted."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(disk_dir: Path, leave: int = 0) -> None:
    """Fills the disk up to its last `leave` bytes."""
    stats = os.statvfs(disk_dir)
    size = stats.f_bavail * stats.f_frsize - leave
    with open(disk_dir / f"filler-{uuid.uuid4().hex}", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, max(size, 1))


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def litter(directory: Path) -> list[str]:
    return [str(p) for p in directory.rglob("*") if "_temp" in p.name or ".partial-" in p.name]


# --- A full disk --------------------------------------------------------------------------


def test_tensorflow_and_python_disk_full_errors_name_the_path_meant():
    text = ("{{function_node __wrapped__SaveV2_dtypes_19_device_/job:localhost/replica:0/task:0/"
            "device:CPU:0}} /w/checkpoints/ckpt-4_temp/part-00000-of-00001.data-00000-of-00001"
            ".tempstate161376; No space left on device [Op:SaveV2]")
    assert disk.is_no_space(RuntimeError(text))
    assert disk.path_in(RuntimeError(text)) == "/w/checkpoints/ckpt-4"
    atomic = RuntimeError("/e/saved_model.pb.tmpa589605f918c43269ac3fccd71f82216; "
                          "No space left on device")
    assert disk.path_in(atomic) == "/e/saved_model.pb"
    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/w/eval.json")
    assert disk.is_no_space(error) and disk.path_in(error) == "/w/eval.json"
    assert not disk.is_no_space(OSError(errno.EACCES, "Permission denied", "/w"))


def test_any_entry_point_reports_a_full_disk_in_one_line():
    """Wherever it strikes (here: a write no wrapper names), cli.run gives one line, exit 2."""
    script = textwrap.dedent("""
        import errno, os
        from absl import flags
        from mnist_tf import cli
        flags.DEFINE_string("workdir", None, "")

        def main(argv):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/w/results.json")

        cli.run(main)
    """)
    result = subprocess.run([sys.executable, "-c", script, "--workdir=/w"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert_usage_error(result, "error: no space left on device writing /w/results.json; "
                       "free space or use another --workdir")


def test_a_failed_first_checkpoint_save_leaves_no_temp_directory(small_disk, small_data_dir):
    workdir = small_disk / "run"
    fill(small_disk, leave=300_000)
    with pytest.raises(disk.NoSpaceError, match=r"no space left on device writing .*ckpt-2; "):
        train(workdir, small_data_dir, **WIDE)
    assert litter(small_disk) == []
    assert not (workdir / "checkpoints").exists()  # The save created it: removed too.


def test_full_disk_in_train_evaluate_and_export_is_one_line_and_keeps_the_run(
        small_disk, small_data_dir):
    workdir = small_disk / "run"
    train(workdir, small_data_dir, **WIDE)
    kept = snapshot(workdir / "checkpoints")
    results = (workdir / "results.json").read_bytes()
    checkpoint_size = sum(len(data) for data in kept.values())

    fill(small_disk, leave=checkpoint_size * 3 // 4)  # The summaries fit; ckpt-4 does not.
    resumed = run_module("mnist_tf.train", f"--workdir={workdir}", f"--data_dir={small_data_dir}",
                         "--hidden_sizes=64", "--train_steps=4", *CLI_FLAGS)
    assert_usage_error(resumed, "error: no space left on device writing "
                       f"{workdir}/checkpoints/ckpt-4; free space or use another --workdir")
    assert snapshot(workdir / "checkpoints") == kept
    assert (workdir / "results.json").read_bytes() == results

    fill(small_disk)
    evaluated = run_module("mnist_tf.evaluate", f"--workdir={workdir}",
                           f"--data_dir={small_data_dir}", "--nodownload")
    assert_usage_error(evaluated, f"error: no space left on device writing {workdir}; ")
    assert not (workdir / "eval.json").exists()

    export_dir = small_disk / "exported"
    exported = run_module("mnist_tf.export", f"--workdir={workdir}",
                          f"--export_dir={export_dir}")
    assert_usage_error(exported, f"error: no space left on device writing {export_dir}; free "
                       "space or use another --export_dir")
    assert not export_dir.exists()
    assert snapshot(workdir / "checkpoints") == kept
    assert litter(small_disk) == []


# --- Memory ---------------------------------------------------------------------------------


@pytest.fixture
def machine_of_24_gib(monkeypatch):
    monkeypatch.setattr(memory, "machine_bytes", lambda: 24 * 2 ** 30)
    monkeypatch.setattr(memory, "_may_use_gpu", lambda config: False)


@pytest.mark.parametrize("settings, fragments", [
    (dict(hidden_sizes=(100000, 100000)),
     ["--hidden_sizes=100000,100000 needs about 15", "Adam's slots 75 GiB",
      "this machine has 24 GiB of memory; use smaller layers"]),
    (dict(eval_batch_size=100_000_000),
     ["--eval_batch_size=100000000 needs about", "use a smaller --eval_batch_size"]),
    (dict(hidden_sizes=(20000, 20000), distribution="mirrored", cpu_replicas=8),
     ["--hidden_sizes=20000,20000 with --cpu_replicas=8", "fewer replicas"]),
])
def test_a_run_larger_than_the_memory_is_refused_naming_the_flag(
        machine_of_24_gib, settings, fragments):
    with pytest.raises(UserError) as refused:
        memory.check(TrainConfig(**settings))
    message = str(refused.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def shipped(name: str) -> TrainConfig:
    """The TrainConfig of a shipped config's flagfile."""
    kinds = {flag.name: flag.kind for flag in configs.train_flags()}
    values = {flag.name: flag.default for flag in configs.train_flags()}
    for line in Path(configs.shipped_config(name)).read_text().splitlines():
        flag, _, value = line.strip().removeprefix("--").partition("=")
        if not flag or line.startswith("#") or flag == "workdir":
            continue
        if flag.removeprefix("no") in kinds and kinds[flag.removeprefix("no")] == "boolean":
            values[flag.removeprefix("no")] = not flag.startswith("no")
        else:
            values[flag] = {"integer": int, "float": float}.get(kinds[flag], str)(value)
    return TrainConfig.from_flag_values(values)


def test_no_legitimate_run_is_refused_even_on_a_machine_of_4_gib(monkeypatch):
    monkeypatch.setattr(memory, "machine_bytes", lambda: 4 * 2 ** 30)
    monkeypatch.setattr(memory, "_may_use_gpu", lambda config: False)
    for name in configs.shipped_configs():
        memory.check(shipped(name))
    for settings in (dict(hidden_sizes=(2048, 2048, 2048), ema_decay=0.999, batch_size=256,
                          eval_batch_size=10000),
                     dict(hidden_sizes=(1024, 1024), distribution="mirrored", cpu_replicas=8),
                     dict(precision="mixed_bfloat16", batch_size=60000)):
        memory.check(TrainConfig(**settings))


def test_train_refuses_a_model_too_large_before_tensorflow_loads(tmp_path):
    workdir = tmp_path / "run"
    started = time.monotonic()
    result = run_module("mnist_tf.train", f"--workdir={workdir}",
                        "--hidden_sizes=1000000,1000000", "--train_steps=2")
    assert_usage_error(result, "--hidden_sizes=1000000,1000000 needs about", "GiB",
                       "use smaller layers")
    assert not workdir.exists()  # No workdir, no config.json.
    assert time.monotonic() - started < 30


# --- CPU replicas and signals ----------------------------------------------------------------


def test_cpu_replicas_beyond_the_bound_are_refused_by_the_config():
    TrainConfig(distribution="mirrored", cpu_replicas=8)
    with pytest.raises(ConfigError, match=r"--cpu_replicas: 64 is more than 8.*"
                                          r"use --cpu_replicas=8 or fewer"):
        TrainConfig(distribution="mirrored", cpu_replicas=64)


def start(script: str, *args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if text in line:
            return
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"never printed {text!r}: {process.communicate()[1][-2000:]}")


def ends_within(process: subprocess.Popen, seconds: float) -> int:
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"still running {seconds} s after SIGTERM") from None


def test_a_second_sigterm_ends_the_process_at_once():
    """The first asks for a graceful stop; the second ends it even if the stop is stuck."""
    process = start("""
        import time
        from mnist_tf.training import preemption

        with preemption.StopRequest() as stop:
            print("READY", flush=True)
            while not stop():
                time.sleep(0.01)
            print("STOPPING", flush=True)
            time.sleep(120)  # A checkpoint save or a clean-up that never ends.
    """)
    wait_for_line(process, "READY")
    process.send_signal(signal.SIGTERM)
    wait_for_line(process, "STOPPING")
    process.send_signal(signal.SIGTERM)
    assert ends_within(process, 20) == -signal.SIGTERM


def test_a_sigterm_after_training_ends_the_process_at_once(tmp_path, small_data_dir):
    """Once the loop is over nothing polls the stop request: the signal's default action."""
    process = start("""
        import sys, time
        from mnist_tf.config import TrainConfig
        from mnist_tf.training import preemption, trainer

        with preemption.StopRequest() as stop:
            trainer.train_and_evaluate(
                TrainConfig(hidden_sizes=(8,), batch_size=32, train_steps=2, jit_compile=False,
                            validation_size=0), sys.argv[1], data_dir=sys.argv[2],
                allow_download=False, stop_request=stop)
            time.sleep(120)  # Stands for TensorFlow's clean-up blocking the main thread.
    """, str(tmp_path / "run"), small_data_dir)
    wait_for_line(process, "Done:")
    process.send_signal(signal.SIGTERM)
    assert ends_within(process, 20) == -signal.SIGTERM
    assert (tmp_path / "run" / "results.json").exists()


def test_handlers_are_released_once_and_restored_on_exit():
    from mnist_tf.training import preemption

    before = signal.getsignal(signal.SIGTERM)
    with preemption.StopRequest(log=lambda line: None) as stop:
        stop.handle(signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # A second one kills.
        stop.release()
        assert signal.getsignal(signal.SIGTERM) == before
    assert signal.getsignal(signal.SIGTERM) == before


# --- Export's destination ----------------------------------------------------------------------


def test_export_into_a_symlink_to_an_empty_directory_works(trained, tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    exported = export.export_model(str(trained), str(link))
    assert exported["export_dir"] == str(target.resolve())
    assert link.is_symlink() and (link / "saved_model.pb").is_file()
    assert [name for name in os.listdir(tmp_path) if ".partial-" in name] == []

    full = tmp_path / "full_link"
    full.symlink_to(target)  # Now holds the export.
    with pytest.raises(UserError, match="already exists and is not empty"):
        export._check_export_dir(str(full))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_partials_of_killed_exports_are_removed_and_nothing_else(trained, tmp_path):
    host, token = socket.gethostname(), uuid.uuid4().hex
    names = {
        "dead": f".model.partial-{host}-{dead_pid()}-{token}",
        "alive": f".model.partial-{host}-{os.getpid()}-{token}",
        "other_host": f".model.partial-{host}x-{dead_pid()}-{token}",
        "other_export": f".other.partial-{host}-{dead_pid()}-{token}",
        "unmarked": f".model.partial-{token}",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "saved_model.pb").write_bytes(b"partial")
    export.export_model(str(trained), str(tmp_path / "model"))
    assert not (tmp_path / names["dead"]).exists()
    for kind in ("alive", "other_host", "other_export", "unmarked"):
        assert (tmp_path / names[kind] / "saved_model.pb").read_bytes() == b"partial", kind
    assert (tmp_path / "model" / "saved_model.pb").is_file()


def test_a_sigkilled_export_leaves_a_partial_that_the_next_export_removes(trained, tmp_path):
    export_dir = tmp_path / "model"
    process = start("""
        import os, signal, sys
        from mnist_tf import export

        def die(*args, **kwargs):  # Killed while writing, as by SIGKILL.
            os.kill(os.getpid(), signal.SIGKILL)

        export.files.write_json_atomic = die
        export.export_model(sys.argv[1], sys.argv[2])
    """, str(trained), str(export_dir))
    assert ends_within(process, 120) == -signal.SIGKILL
    left = [name for name in os.listdir(tmp_path) if ".partial-" in name]
    assert len(left) == 1 and not export_dir.exists()
    export.export_model(str(trained), str(export_dir))
    assert [name for name in os.listdir(tmp_path) if ".partial-" in name] == []
    assert (export_dir / "saved_model.pb").is_file()
