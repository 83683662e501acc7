"""Signals sent to a real training process: SIGTERM/SIGINT stop gracefully, SIGKILL loses
only the steps since the last checkpoint; either way the resumed run ends bit-identical."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

from mnist_tf.config import TrainConfig
from mnist_tf.training import preemption, trainer

# 600 training examples, 18 steps per epoch; dropout on, so that the checkpointed RNG
# is part of what must resume. Without XLA: the signals, not the compiler, are tested
# here, and each process would spend ~6 s compiling (the chunked loop and its stop vote
# are the same either way).
RUN = ["--hidden_sizes=32", "--batch_size=32", "--validation_size=0", "--train_steps=300",
       "--log_every_steps=10", "--checkpoint_every_steps=50", "--histogram_every_steps=0",
       "--eval_batch_size=100", "--dropout=0.2", "--deterministic", "--nojit_compile",
       "--nodownload"]
# RUN as a TrainConfig, for the uninterrupted reference trained in this process.
RUN_CONFIG = TrainConfig(hidden_sizes=(32,), batch_size=32, validation_size=0, train_steps=300,
                         log_every_steps=10, checkpoint_every_steps=50, histogram_every_steps=0,
                         eval_batch_size=100, dropout=0.2, deterministic=True, jit_compile=False)


def start(workdir, data_dir, *flags):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_tf.train", f"--workdir={workdir}", f"--data_dir={data_dir}",
         *RUN, *flags],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(process, at_least):
    """Reads progress lines until the run has passed `at_least` steps; returns the lines."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("step ") and int(line.split()[1].split("/")[0]) >= at_least:
            return lines
    raise AssertionError(f"the run ended before step {at_least}:\n{''.join(lines)}")


def finish(workdir, data_dir, *flags):
    result = subprocess.run(
        [sys.executable, "-m", "mnist_tf.train", f"--workdir={workdir}", f"--data_dir={data_dir}",
         *RUN, *flags], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    return result.stdout, json.loads((workdir / "results.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, small_data_dir):
    """params_sha256 of RUN trained straight through, in this process (no second start-up).

    The stopped command-line runs must end on it: that also checks that RUN's flags
    and RUN_CONFIG are the same run.
    """
    results = trainer.train_and_evaluate(RUN_CONFIG, str(tmp_path_factory.mktemp("straight")),
                                         data_dir=small_data_dir, allow_download=False,
                                         log=lambda line: None)
    return results["params_sha256"]


def stop_with(signum, workdir, data_dir, after):
    """Starts a run, sends `signum` once it has logged step `after`.

    Returns (exit status, the whole stdout, stderr, seconds from the signal to the exit).
    """
    process = start(workdir, data_dir)
    try:
        lines = wait_for_step(process, after)
        sent = time.monotonic()
        process.send_signal(signum)
        out, err = process.communicate(timeout=60)
        seconds = time.monotonic() - sent
        out = "".join(lines) + out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, out, err, seconds


def stopped_step(out, name):
    stopped = [line for line in out.splitlines() if line.startswith("Stopped: ")]
    assert len(stopped) == 1 and f"stopped by {name} at step" in stopped[0], out[-2000:]
    assert "run the same command again to resume" in stopped[0]
    step = int(stopped[0].split(" at step ")[1].split(";")[0])
    assert f"ckpt-{step}" in stopped[0]
    return step


def progress_steps(lines):
    return [int(line.split()[1].split("/")[0]) for line in lines if line.startswith("step ")]


def kill_after_step(step, workdir, data_dir, *flags):
    """Starts a run, SIGKILLs it once it has logged `step`; returns the last step it logged.

    The run may have gone on past `step` before the kill lands; what it printed
    until then is still in the pipe (its stdout is unbuffered), so the last
    progress line read after its death is the last one it wrote.
    """
    process = start(workdir, data_dir, *flags)
    try:
        lines = wait_for_step(process, step)
        process.kill()  # SIGKILL: no handler runs, nothing is flushed.
        process.wait(timeout=60)
        lines += process.stdout.readlines()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return max(progress_steps(lines))


def resume_bounds(last_logged, checkpoint_every):
    """The steps a run SIGKILLed after logging `last_logged` can resume from.

    A run logs step s (every 10 steps, so at every checkpoint step) before it
    saves ckpt-s, and it had not logged step last_logged + 10 when it died. So
    every checkpoint below `last_logged` is complete; ckpt-`last_logged`, if
    one is due there, may have been cut short (then the previous one is used);
    none after it was started.
    """
    newest_complete = (last_logged - 1) // checkpoint_every * checkpoint_every
    newest_begun = last_logged // checkpoint_every * checkpoint_every
    return newest_complete, newest_begun


def resumed_step(out):
    return int(out.split("Resuming from ")[1].split(" at step ")[1].split()[0])


def test_sigint_sigterm_and_sigkill_each_resume_and_the_run_ends_bit_identical(
        tmp_path, small_data_dir, uninterrupted):
    # One run of RUN, stopped three ways, each stop's run resumed by the next (merged
    # from a test per signal, each of which paid for a start and a finish of its own).
    # Ctrl-C (SIGINT): a graceful stop, with a checkpoint at the step it stopped at.
    status, out, err, _ = stop_with(signal.SIGINT, tmp_path, small_data_dir, after=60)
    assert status == 128 + signal.SIGINT, err
    assert "Traceback" not in err
    first = stopped_step(out, "SIGINT")
    assert 60 <= first < 300
    assert (tmp_path / "checkpoints" / f"ckpt-{first}.index").exists()
    assert not (tmp_path / "results.json").exists()  # The run is not finished.

    # SIGTERM (a preemption) to the resumed run: the same, within seconds.
    status, out, err, seconds = stop_with(signal.SIGTERM, tmp_path, small_data_dir,
                                          after=first + 60)
    assert status == 128 + signal.SIGTERM, err
    assert f"at step {first}" in out.split("Resuming from ")[1].splitlines()[0]
    assert "SIGTERM received: finishing the current step" in out
    assert "Traceback" not in err
    assert seconds < 10, seconds  # A few seconds at most (the closing note has the figure).
    second = stopped_step(out, "SIGTERM")
    assert first + 60 <= second < 300
    assert not (tmp_path / "results.json").exists()

    # SIGKILL to the next resumed run, once it has logged a step past the next
    # periodic checkpoint (every 50 steps): only the steps since that one are lost.
    after = (second // 50 + 1) * 50 + 10
    last_logged = kill_after_step(after, tmp_path, small_data_dir)
    assert after <= last_logged < 300
    resumed_out, results = finish(tmp_path, small_data_dir)
    resumed_at = resumed_step(resumed_out)
    # The newest checkpoint written before the kill: not an earlier one, and
    # not one from past the step that was running.
    lowest, highest = resume_bounds(last_logged, 50)
    assert lowest <= resumed_at <= highest and resumed_at % 50 == 0, (resumed_at, last_logged)
    # Three stops later, the parameters of a run never stopped.
    assert results["params_sha256"] == uninterrupted


def test_sigkill_under_float16_loss_scaling_and_mirrored_replicas_resumes_exactly(
        tmp_path, small_data_dir):
    # One run covers the options a resume must carry: the float16 loss scale and
    # its streak in the checkpoint, variables mirrored over two replicas (each
    # drawing its own dropout masks and elastic fields) saved by and restored into
    # a strategy, and the weight average, updated once per step across replicas.
    # Mirrored float16 steps are slow on a CPU (one step per call, float16 emulated,
    # ~0.1 s each with the average and the elastic fields): 60 steps (3.3 epochs),
    # checkpoints every 20 (mid-epoch 1 and 2), killed past step 30.
    options = ["--precision=mixed_float16", "--distribution=mirrored", "--cpu_replicas=2",
               "--train_steps=60", "--checkpoint_every_steps=20", "--ema_decay=0.95",
               "--augment_elastic_alpha=8", "--augment_elastic_sigma=3"]
    _, straight = finish(tmp_path / "straight", small_data_dir, *options)
    last_logged = kill_after_step(30, tmp_path / "killed", small_data_dir, *options)
    assert 30 <= last_logged < 60
    out, resumed = finish(tmp_path / "killed", small_data_dir, *options)
    assert "Distribution: MirroredStrategy, 2 replicas" in out
    assert "dynamic loss scale" in out
    resumed_at = resumed_step(out)
    lowest, highest = resume_bounds(last_logged, 20)
    assert lowest <= resumed_at <= highest and resumed_at % 20 == 0, (resumed_at, last_logged)
    assert resumed["params_sha256"] == straight["params_sha256"]
    assert resumed["ema_params_sha256"] == straight["ema_params_sha256"] is not None


def test_a_second_sigint_aborts_at_once():
    lines = []
    stop = preemption.StopRequest(log=lines.append)
    stop.handle(signal.SIGINT)
    assert stop() and stop.signum == signal.SIGINT and "SIGINT received" in lines[0]
    with pytest.raises(KeyboardInterrupt):
        stop.handle(signal.SIGINT)


def test_handlers_are_restored_afterwards():
    before = signal.getsignal(signal.SIGTERM)
    with preemption.StopRequest() as stop:
        assert signal.getsignal(signal.SIGTERM) == stop.handle
    assert signal.getsignal(signal.SIGTERM) == before
