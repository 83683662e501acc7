"""Where a training step's time goes: TensorFlow's profiler trace, summed per op.

    python benchmarks/step_profile.py --hidden_sizes=256,128 --batch_size=1024

Runs `python -m mnist_tf.train` with its default flags (the tf.data chunks, 50
XLA-compiled steps per call) and `--profile_steps=START,END` in a scratch
workdir, then reads the trace it wrote (`*.xplane.pb`) and prints, per
training step:

- the wall time of the traced calls (`train_call` events) over the profiled
  steps;
- the time inside XLA's compiled ops (the thunks XLA's CPU runtime runs, one
  event each: `MatMul.*` for the matmuls, `*_fusion` for the fused
  element-wise work: ReLU and its gradient, softmax, Adam, the finite check,
  the pixel lookup), grouped into matmuls and the rest, the top ops named;
- the gap: wall time in which no compiled op ran (the thunk executor's
  dispatch between ops, the loop's control flow, waiting for the next chunk).

The trace is converted with TensorFlow's own profiler plugin binding
(`_pywrap_profiler_plugin.xspace_to_tools_data`, the converter TensorBoard's
profile tab uses); it is a private API, checked to exist in TensorFlow 2.21.
The scratch workdir, and only it, is deleted at the end (`--keep` keeps it).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import flags  # noqa: E402

from mnist_tf import cli  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
# Profiler bookkeeping events that enclose the ops rather than being ops.
WRAPPERS = {"ThreadpoolListener::Region", "ThunkExecutor::Execute", "SlinkyThreadPool::Await"}


def trace_events(xplane: str) -> list[dict]:
    """The trace's events in Chrome trace format, thread names resolved into `thread`."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin

    data, _ = _pywrap_profiler_plugin.xspace_to_tools_data([xplane], "trace_viewer@", {})
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    events = json.loads(data)["traceEvents"]
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    complete = [e for e in events if e.get("ph") == "X"]
    for event in complete:
        event["thread"] = threads.get((event["pid"], event["tid"]), "")
    return complete


def summarize(events: list[dict], steps: int, top: int = 12) -> dict:
    """Milliseconds per step: wall, compiled ops (matmuls, the rest, by name), the gap."""
    wall = sum(e["dur"] for e in events if e["name"] == "train_call")
    ops = collections.Counter()
    for event in events:
        # XLA's thunks run on TensorFlow's Eigen intra-op threads.
        if "Eigen" in event["thread"] and event["name"] not in WRAPPERS:
            ops[event["name"]] += event["dur"]
    per_step = {name: us / steps / 1e3 for name, us in ops.items()}
    matmul = sum(ms for name, ms in per_step.items() if name.startswith("MatMul"))
    inside = sum(per_step.values())
    return {
        "wall_ms_per_step": wall / steps / 1e3,
        "ops_ms_per_step": inside,
        "matmul_ms_per_step": matmul,
        "other_ops_ms_per_step": inside - matmul,
        "gap_ms_per_step": wall / steps / 1e3 - inside,
        "top_ops_ms_per_step": dict(sorted(per_step.items(), key=lambda kv: -kv[1])[:top]),
    }


def define_flags() -> None:
    """The script's flags: defined when it runs, not when a test imports `summarize`."""
    flags.DEFINE_string("hidden_sizes", "256,128", "The model's hidden layers.")
    flags.DEFINE_integer("batch_size", 1024, "Batch size.")
    flags.DEFINE_string("profile_steps", "60,110", "START,END: the global steps profiled.")
    flags.DEFINE_integer("epochs", 2, "Epochs of the run (the profiled steps must fall inside).")
    flags.DEFINE_integer("top", 12, "Ops listed by name.")
    flags.DEFINE_string("data_dir", None, "TFDS data dir (default: TFDS's; must be prepared).")
    flags.DEFINE_boolean("keep", False, "Keep the scratch workdir (its trace, for TensorBoard).")
    flags.DEFINE_string("output", None, "Also write the JSON line to this file.")


def main(argv):
    del argv
    import common

    start, end = (int(s) for s in FLAGS.profile_steps.split(","))
    workdir = tempfile.mkdtemp(prefix="mnist_tf_step_profile_")
    command = [sys.executable, "-m", "mnist_tf.train", f"--workdir={workdir}",
               f"--hidden_sizes={FLAGS.hidden_sizes}", f"--batch_size={FLAGS.batch_size}",
               f"--epochs={FLAGS.epochs}", "--validation_size=0", "--dropout=0",
               f"--profile_steps={start},{end}", "--nodownload"]
    if FLAGS.data_dir:
        command.append(f"--data_dir={FLAGS.data_dir}")
    print("Running:", " ".join(command[1:]), flush=True)
    try:
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        xplanes = glob.glob(os.path.join(workdir, "**", "*.xplane.pb"), recursive=True)
        if not xplanes:
            cli.fail(f"no profile trace under {workdir}: did the run reach step {end}?")
        cli.import_tensorflow_quietly()
        figures = summarize(trace_events(xplanes[0]), end - start, FLAGS.top)
    finally:
        if not FLAGS.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    wall = figures["wall_ms_per_step"]
    if not wall:
        cli.fail("the trace has no `train_call` events: the default runner's traced call "
                 "(mnist_tf/training/runners.py) is named otherwise")
    rows = [("config", f"784-{FLAGS.hidden_sizes.replace(',', '-')}-10, batch "
                       f"{FLAGS.batch_size}, default flags, steps {start}..{end}"),
            ("wall per step", f"{wall:.3f} ms (the traced calls)")]
    for key, label in (("matmul_ms_per_step", "matmuls (XLA thunks)"),
                       ("other_ops_ms_per_step", "other compiled ops"),
                       ("gap_ms_per_step", "gap: no compiled op running")):
        rows.append((label, f"{figures[key]:.3f} ms ({100 * figures[key] / wall:.1f} %)"))
    rows += [(f"  {name}", f"{ms:.3f} ms") for name, ms in figures["top_ops_ms_per_step"].items()]
    result = {"benchmark": "step_profile", "hidden_sizes": FLAGS.hidden_sizes,
              "batch_size": FLAGS.batch_size, "profile_steps": [start, end],
              **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()},
              **common.machine()}
    result["top_ops_ms_per_step"] = {k: round(v, 4) for k, v in
                                     figures["top_ops_ms_per_step"].items()}
    if FLAGS.keep:
        rows.append(("trace kept", workdir))
    common.report("Where the step's time goes (profiler trace)", rows, result, FLAGS.output)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
