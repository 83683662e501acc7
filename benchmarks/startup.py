"""Start-up: how long each command takes before it does its work.

    python benchmarks/startup.py --data_dir=DIR

Measures, each the median of --repeats fresh processes:

- `python -c "import tensorflow"`: the floor a plain TensorFlow program pays,
  and TensorFlow imported as the entry points import it, without Keras or
  JAX (`mnist_tf.cli.import_tensorflow_quietly`);
- `python -m mnist_tf.<command> --help` for every entry point that
  `python -m mnist_tf` lists: help needs no TensorFlow;
- train's time to its first step: from spawning `python -m mnist_tf.train`
  (a small run, --log_every_steps=1, so the first traced call holds one step
  and its progress line is printed right after it) to the moment that line
  reaches this process: imports, data loading, building the state, tracing
  and XLA compilation all count;
- the same run's phases, from its own console lines' arrival times: the
  `Device:` line (TensorFlow imported and devices probed), the `Model:` line
  (data loaded, state built) and the first progress line.

Prints a table, then one JSON line.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from absl import flags, logging  # noqa: E402

from mnist_tf import cli  # noqa: E402
from mnist_tf.__main__ import COMMANDS as COMMAND_LIST  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_integer("repeats", 3, "Fresh processes per figure (medians reported).")
flags.DEFINE_string("data_dir", None, "TFDS data dir with prepared MNIST (TFDS's default if "
                    "unset); the train run needs it.")
flags.DEFINE_string("output", None, "Also write the JSON line to this file.")

COMMANDS = tuple(name for name, _ in COMMAND_LIST)  # Every entry point.
# The train run whose first step is timed: small, so the step itself is short.
TRAIN_FLAGS = ("--hidden_sizes=512,256", "--batch_size=128", "--train_steps=2",
               "--log_every_steps=1", "--validation_size=0", "--histogram_every_steps=0",
               "--nodownload")
# The console lines that mark the phases of a run, by their start.
PHASES = {"devices": "Device:", "model": "Model:", "first_step": "step 1/"}


def seconds_of(args: list[str]) -> float:
    """Seconds of one process, spawn to exit; must succeed."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        cli.fail(f"{' '.join(args)} failed: {result.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


def phase_times(data_dir: str | None) -> dict[str, float]:
    """Seconds from spawning a train run to each of its `PHASES` lines."""
    with tempfile.TemporaryDirectory() as workdir:
        args = [sys.executable, "-m", "mnist_tf.train", f"--workdir={workdir}/run",
                *TRAIN_FLAGS, *([f"--data_dir={data_dir}"] if data_dir else [])]
        start = time.perf_counter()
        process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True, bufsize=1,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1"))
        times = {}
        for line in process.stdout:
            for phase, prefix in PHASES.items():
                if phase not in times and line.startswith(prefix):
                    times[phase] = time.perf_counter() - start
        if process.wait() != 0 or len(times) < len(PHASES):
            cli.fail(f"the train run failed or printed no {set(PHASES) - set(times)} line")
        return times


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    repeats = range(FLAGS.repeats)
    figures = {"import_tensorflow_seconds": statistics.median(
        seconds_of(["-c", "import tensorflow"]) for _ in repeats)}
    # What the entry points' import skips: Keras (and matplotlib), and JAX where installed.
    figures["import_tensorflow_as_entry_points_seconds"] = statistics.median(
        seconds_of(["-c", "from mnist_tf import cli; cli.import_tensorflow_quietly()"])
        for _ in repeats)
    for command in COMMANDS:
        figures[f"{command}_help_seconds"] = statistics.median(
            seconds_of(["-m", f"mnist_tf.{command}", "--help"]) for _ in repeats)
    runs = [phase_times(FLAGS.data_dir) for _ in repeats]
    for phase in PHASES:
        figures[f"train_{phase}_seconds"] = statistics.median(run[phase] for run in runs)
    figures = {key: round(value, 3) for key, value in figures.items()}
    machine = common.machine()
    rows = [("cpu", common.describe_cpu(machine)),
            ("import tensorflow", f"{figures['import_tensorflow_seconds']:.2f} s"),
            ("  as the entry points (no Keras, no JAX)",
             f"{figures['import_tensorflow_as_entry_points_seconds']:.2f} s")]
    rows += [(f"mnist_tf.{command} --help", f"{figures[f'{command}_help_seconds']:.2f} s")
             for command in COMMANDS]
    rows += [(f"train: {PHASES[phase]!r} line", f"{figures[f'train_{phase}_seconds']:.2f} s "
              "after spawn") for phase in PHASES]
    common.report("Start-up", rows, {"benchmark": "startup", "repeats": FLAGS.repeats,
                                     "train_flags": list(TRAIN_FLAGS), **figures, **machine},
                  FLAGS.output)


if __name__ == "__main__":
    cli.run(main)
