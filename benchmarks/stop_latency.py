"""Seconds from SIGTERM (or SIGINT) to the exit of a training run that saved its checkpoint.

    python benchmarks/stop_latency.py --config=configs/default.cfg --repeats=3

Each repeat starts `python -m mnist_tf.train --flagfile=CONFIG` on a fresh
workdir, waits until its progress lines show --after_steps steps trained, sends
the signal a random 0..--jitter_seconds later and times until the process has
exited. A repeat counts only if the run stopped as promised: exit status 128 +
the signal, one `Stopped: ... at step N; checkpoint .../ckpt-N saved` line,
and that checkpoint on disk. With --check_resume (on by default) the first
workdir is then resumed with the same command, which must report `at step N`
and finish. The median over the repeats is the figure to quote; the time
includes whatever is in flight when the signal lands (a call of up to
--steps_per_call steps, or an epoch-end evaluation, which is finished rather
than thrown away), the checkpoint, closing the summaries and the process
exit.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import flags, logging  # noqa: E402

from mnist_tf import cli  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_string("config", "configs/default.cfg", "Flagfile of the run to stop.")
flags.DEFINE_enum("signal", "SIGTERM", ["SIGTERM", "SIGINT"], "Signal sent to the run.")
flags.DEFINE_integer("after_steps", 400, "Steps the run has trained when the signal is sent.")
flags.DEFINE_float("jitter_seconds", 1.0,
                   "The signal goes out a random 0..this many seconds after that step's "
                   "progress line, so it lands at arbitrary points of the loop (mid-call, "
                   "mid-evaluation), not always at a call boundary.")
flags.DEFINE_integer("repeats", 3, "Runs stopped (the median is reported).")
flags.DEFINE_boolean("check_resume", True, "Resume the first stopped run to its end.")
flags.DEFINE_string("data_dir", None, "TFDS data dir (default: TFDS's; prepared if needed).")
flags.DEFINE_multi_string("extra_flag", [], "More flags for the training runs.")
flags.DEFINE_string("output", None, "Also write the JSON line to this file.")


def train_command(workdir: str) -> list[str]:
    command = [sys.executable, "-m", "mnist_tf.train", f"--flagfile={FLAGS.config}",
               f"--workdir={workdir}", *FLAGS.extra_flag]
    if FLAGS.data_dir:
        command.append(f"--data_dir={FLAGS.data_dir}")
    return command


def steps_done(line: str) -> int | None:
    """The step of a progress line `step N/M | ...`, else None."""
    if line.startswith("step ") and "/" in line:
        return int(line.split()[1].split("/")[0])
    return None


def stop_once(workdir: str, signum: int, delay: float) -> tuple[float, int, str]:
    """Runs, signals and waits.

    Returns:
        (seconds from the signal to the exit, the step stopped at, the run's
        `Device:` line).
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(train_command(workdir), cwd=REPO, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            step = steps_done(line)
            if step is not None and step >= FLAGS.after_steps:
                break
        else:
            cli.fail(f"the run ended before step {FLAGS.after_steps}; lower --after_steps "
                     f"(its output ends: {''.join(lines[-3:]).strip()!r})")
        time.sleep(delay)
        sent = time.monotonic()
        process.send_signal(signum)
        rest, err = process.communicate(timeout=300)
        seconds = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stopped = [line for line in rest.splitlines() if line.startswith("Stopped: ")]
    if process.returncode != 128 + signum or len(stopped) != 1:
        cli.fail(f"the run did not stop as promised (exit {process.returncode}): "
                 f"{err.strip().splitlines()[-1:] or rest.strip().splitlines()[-1:]}")
    step = int(stopped[0].split(" at step ")[1].split(";")[0])
    if not os.path.exists(os.path.join(workdir, "checkpoints", f"ckpt-{step}.index")):
        cli.fail(f"the run said it saved ckpt-{step}, but {workdir}/checkpoints lacks it")
    device = next((line.split(": ", 1)[1].strip() for line in lines
                   if line.startswith("Device: ")), "unknown")
    return seconds, step, device


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.repeats < 1:
        cli.fail(f"--repeats: must be at least 1, got {FLAGS.repeats}")
    if not os.path.isfile(os.path.join(REPO, FLAGS.config)) and not os.path.isfile(FLAGS.config):
        cli.fail(f"--config: no such flagfile {FLAGS.config}")
    import common

    signum = getattr(signal, FLAGS.signal)
    delays = random.Random(0).uniform  # Seeded: the same moments on every invocation.
    with tempfile.TemporaryDirectory(prefix="mnist_tf-stop-") as scratch:
        seconds, steps = [], []
        for repeat in range(FLAGS.repeats):
            workdir = os.path.join(scratch, f"run{repeat}")
            took, step, device = stop_once(workdir, signum, delays(0.0, FLAGS.jitter_seconds))
            seconds.append(took)
            steps.append(step)
            print(f"repeat {repeat + 1}/{FLAGS.repeats}: stopped at step {step}, exited "
                  f"{took:.2f} s after {FLAGS.signal}", flush=True)
        resumed = None
        if FLAGS.check_resume:
            result = subprocess.run(train_command(os.path.join(scratch, "run0")), cwd=REPO,
                                    capture_output=True, text=True)
            if result.returncode != 0 or f"at step {steps[0]}" not in result.stdout:
                cli.fail(f"resuming the stopped run failed (exit {result.returncode}): "
                         f"{result.stderr.strip().splitlines()[-1:]}")
            resumed = True

    median = statistics.median(seconds)
    result = {
        "benchmark": "stop_latency", "config": FLAGS.config, "signal": FLAGS.signal,
        "after_steps": FLAGS.after_steps, "jitter_seconds": FLAGS.jitter_seconds,
        "extra_flags": FLAGS.extra_flag,
        "seconds": [round(s, 3) for s in seconds], "median_seconds": round(median, 3),
        "stopped_at_steps": steps, "resumed": resumed,
        # Described without loading TensorFlow here: the device is the one the
        # runs reported.
        "device": device, "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "tensorflow": importlib.metadata.version("tensorflow"),
        "python": sys.version.split()[0],
    }
    common.report(f"{FLAGS.signal} to exit", [
        ("run", f"{FLAGS.config} {' '.join(FLAGS.extra_flag)}".strip()),
        ("signal sent", f"0-{FLAGS.jitter_seconds:g} s after step {FLAGS.after_steps}'s "
                        "progress line"),
        ("signal to exit", f"median {median:.2f} s over {FLAGS.repeats} runs "
                           f"({', '.join(f'{s:.2f}' for s in seconds)})"),
        ("checkpoint", f"saved at steps {steps}; exit status {128 + signum}"),
        ("resume", "the first run resumed from its checkpoint and finished" if resumed
         else "not checked"),
    ], result, FLAGS.output)


if __name__ == "__main__":
    cli.run(main)
