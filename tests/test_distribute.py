"""--distribution: MirroredStrategy and MultiWorkerMirroredStrategy in the custom loop.

Both need TensorFlow's runtime configured before it starts (logical CPU
devices, collective ops), so every run under a strategy here is a real
`python -m mnist_tf.train` subprocess; the one-device runs (the reference, a
resume without a strategy) are trained in the test process.
"""

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, assert_usage_error, run_module
from test_clipping import scalar_values

from mnist_tf import inference
from mnist_tf.config import ConfigError, TrainConfig
from mnist_tf.errors import UserError
from mnist_tf.training import distribute, trainer

# Dropout off: the replicas draw their own masks, so only then is a mirrored
# step the same arithmetic as a single-device step on the same global batch.
# Gradients are clipped (most steps here): only clipping the all-reduced
# gradients, alike on every replica, keeps the mirrored runs on the one-device run.
COMMON = ["--hidden_sizes=32", "--batch_size=64", "--train_steps=16", "--validation_size=100",
          "--log_every_steps=4", "--checkpoint_every_steps=8", "--histogram_every_steps=0",
          "--eval_batch_size=100", "--learning_rate=3e-3", "--nodownload", "--deterministic",
          "--clip_grad_norm=1.0"]


# COMMON's run as a TrainConfig, without XLA (a mirrored step runs without it too):
# the one-device runs, trained in the test process (no strategy, so nothing to set
# up before TensorFlow starts: no second start-up).
SINGLE = TrainConfig(hidden_sizes=(32,), batch_size=64, train_steps=16, validation_size=100,
                     log_every_steps=4, checkpoint_every_steps=8, histogram_every_steps=0,
                     eval_batch_size=100, learning_rate=3e-3, deterministic=True,
                     jit_compile=False, clip_grad_norm=1.0)


def train_here(workdir, data_dir):
    """Trains (or resumes) SINGLE in `workdir`; returns the run's console lines, joined."""
    lines = []
    trainer.train_and_evaluate(SINGLE, str(workdir), data_dir=data_dir, allow_download=False,
                               log=lines.append)
    return "\n".join(lines)


def train(workdir, data_dir, *flags):
    return run_module("mnist_tf.train", f"--workdir={workdir}", f"--data_dir={data_dir}",
                      *COMMON, *flags)


def weights(workdir, step=None):
    checkpoint = None if step is None else str(workdir / "checkpoints" / f"ckpt-{step}")
    return [v.numpy() for v in inference.load_model(str(workdir), checkpoint).model.parameters()]


def logged_loss(stdout, step):
    """The training loss of the progress line at `step`."""
    line = next(line for line in stdout.splitlines() if line.startswith(f"step {step}/"))
    return float(line.split("| loss ")[1].split()[0])


@pytest.fixture(scope="module")
def single(tmp_path_factory, small_data_dir):
    """The reference: 16 steps on one device, no strategy (checkpoints at 8 and 16).

    Returns the workdir and the run's console lines.
    """
    workdir = tmp_path_factory.mktemp("single")
    return workdir, train_here(workdir, small_data_dir)


def test_mirrored_matches_one_device_and_its_checkpoint_resumes_without(
        tmp_path, small_data_dir, single):
    reference, reference_out = single
    assert sum(scalar_values(reference, "clipped_fraction")) > 0  # It did clip.
    # 8 steps under MirroredStrategy over two logical CPUs: the same global
    # batches as the reference, split 32 + 32.
    workdir = tmp_path / "run"
    mirrored = train(workdir, small_data_dir, "--distribution=mirrored", "--cpu_replicas=2",
                     "--train_steps=8")
    assert mirrored.returncode == 0, mirrored.stderr
    assert "Distribution: MirroredStrategy, 2 replicas in sync" in mirrored.stdout
    assert "32 per replica" in mirrored.stdout
    # The default fast path cannot run under a strategy: one line says what it falls back to.
    assert ("Fast path: under --distribution=mirrored the step runs without XLA, 50 steps per "
            "call" in mirrored.stdout)
    assert logged_loss(mirrored.stdout, 8) == pytest.approx(logged_loss(reference_out, 8),
                                                            rel=1e-4)
    for a, b in zip(weights(workdir, 8), weights(reference, 8)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # Its checkpoint resumes without a strategy (the reference's run, here) and ends
    # where the reference did.
    resumed = train_here(workdir, small_data_dir)
    assert "Resuming from" in resumed and "at step 8" in resumed
    for a, b in zip(weights(workdir), weights(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    one = json.loads((reference / "results.json").read_text())
    two = json.loads((workdir / "results.json").read_text())
    assert two["test_loss"] == pytest.approx(one["test_loss"], rel=1e-4)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_and_end_with_identical_parameters(tmp_path, small_data_dir):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    workdir = tmp_path / "run"
    processes = []
    try:
        for index in range(2):
            env = dict(os.environ, TF_CONFIG=json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "mnist_tf.train", f"--workdir={workdir}",
                 f"--data_dir={small_data_dir}", *COMMON, "--distribution=multi_worker",
                 # Per-replica batches have no static shape here: dropout must cope.
                 "--dropout=0.2"],
                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = [p.communicate(timeout=240) for p in processes]
    finally:
        for p in processes:  # Never leave a worker behind, whatever happened.
            if p.poll() is None:
                p.kill()
                p.wait()
    # Both workers' ends are shown: when one crashes, the other only reports that
    # its peer stopped sending heartbeats.
    report = "\n".join(f"--- worker {i} (rc {p.returncode}):\n{err[-2500:]}"
                        for i, (p, (_, err)) in enumerate(zip(processes, outputs)))
    for p, (out, _) in zip(processes, outputs):
        assert p.returncode == 0, report
        assert "MultiWorkerMirroredStrategy, 2 replicas in sync" in out
    hashes = [line for out, _ in outputs for line in out.splitlines()
              if line.startswith("Parameters: sha256 ")]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    assert "(chief)" in outputs[0][0] and "(chief)" not in outputs[1][0]
    # Only the chief wrote the run's outputs.
    results = json.loads((workdir / "results.json").read_text())
    assert hashes[0].endswith(results["params_sha256"])
    assert results["global_step"] == 16
    assert "written by the chief" in outputs[1][0]


@pytest.mark.parametrize("text, fragment", [
    (None, "--distribution=multi_worker needs the TF_CONFIG environment variable"),
    ("{not json", "TF_CONFIG: not a cluster and task"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
     "TF_CONFIG: not a cluster and task"),
    ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG: not a cluster and task"),
])
def test_unusable_tf_config_is_a_clear_error(text, fragment):
    with pytest.raises(UserError, match=re.escape(fragment)):
        distribute.check_tf_config(text)


@pytest.mark.parametrize("fields, fragments", [
    (dict(distribution="ring"), ["--distribution", "ring", "mirrored"]),
    (dict(cpu_replicas=2), ["--cpu_replicas", "--distribution=mirrored"]),
])
def test_bad_distribution_configs(fields, fragments):
    # (XLA, several steps per call and --data_on_device are not refused under a
    # strategy: the run falls back and says so; see the mirrored test.)
    with pytest.raises(ConfigError) as error:
        TrainConfig(**fields)
    assert all(fragment in str(error.value) for fragment in fragments), error.value


def test_cli_refuses_a_batch_that_does_not_split_over_the_replicas(tmp_path, small_data_dir):
    result = run_module("mnist_tf.train", f"--workdir={tmp_path}", f"--data_dir={small_data_dir}",
                        "--nodownload", "--distribution=mirrored", "--cpu_replicas=3",
                        "--batch_size=64")
    assert_usage_error(result, "--batch_size", "64", "3 replicas")


def test_sigterm_to_one_worker_stops_every_worker_at_the_same_step(tmp_path, small_data_dir):
    import signal

    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    workdir = tmp_path / "run"
    flags = [f"--workdir={workdir}", f"--data_dir={small_data_dir}", *COMMON,
             "--train_steps=2000", "--distribution=multi_worker"]
    processes = []
    try:
        for index in range(2):
            env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CONFIG=json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "mnist_tf.train", *flags], cwd=REPO, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for line in processes[1].stdout:  # Worker 1 (not the chief) is preempted.
            if line.startswith("step 20/"):
                break
        processes[1].send_signal(signal.SIGTERM)
        outputs = [p.communicate(timeout=120) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    steps = []
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 128 + signal.SIGTERM, err[-3000:]
        stopped = [line for line in out.splitlines() if line.startswith("Stopped: ")]
        assert len(stopped) == 1, out[-2000:]
        steps.append(int(stopped[0].split(" at step ")[1].split(";")[0]))
    assert steps[0] == steps[1] < 2000
    assert (workdir / "checkpoints" / f"ckpt-{steps[0]}.index").exists()  # The chief's.
    for out, _ in outputs:  # Both name it; worker 1's own is in a scratch dir, deleted.
        assert f"checkpoint {workdir / 'checkpoints' / f'ckpt-{steps[0]}'} saved" in out
