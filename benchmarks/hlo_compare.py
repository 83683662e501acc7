"""The compiled training loops side by side: mnist_tf's and the JAX reference's, op by op.

    python benchmarks/hlo_compare.py --hidden_sizes=256,128 --batch_size=128

Both are compiled by XLA. Each runs briefly in a process of its own with
`XLA_FLAGS=--xla_dump_to=DIR --xla_dump_hlo_as_text`: mnist_tf through
`train_throughput.py` (its default-flags runner, or --pipeline), JAX through
`jax_reference.py`. The script then reads each training loop's HLO module
after XLA's optimisations (mnist_tf's is the one named after its traced loop,
JAX's `jit_run`) and counts its instructions by opcode, fusions included as
one `fusion` each: where the two programs differ is where to look for time
(docs/speed.md, Against JAX). Prints a table of every opcode that occurs, then
one JSON line.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from absl import flags, logging  # noqa: E402

from mnist_tf import cli  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FLAGS = flags.FLAGS
flags.DEFINE_string("hidden_sizes", "256,128", "Hidden layer widths.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_enum("pipeline", "default", ["default", "tfdata", "device"],
                  "mnist_tf's input path, as train_throughput.py's --pipeline.")
flags.DEFINE_integer("examples", 12800, "Examples trained by each side (enough for one call).")
flags.DEFINE_string("output", None, "Also write the JSON line to this file.")

# `%name = type opcode(`: an instruction of an HLO text module.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%\S+ = .*?\s([a-z][a-z0-9-]*)\(")
# The training loop's module of each side, by its file name.
_LOOP_MODULE = {"mnist_tf": re.compile(r"inference_train_(call|loop)_"),
                "jax": re.compile(r"jit_run")}


def opcodes(path: str) -> collections.Counter:
    """Instructions by opcode in one HLO text module (those inside fusions too)."""
    counts = collections.Counter()
    with open(path) as f:
        for line in f:
            match = _INSTRUCTION.match(line)
            if match:
                counts[match.group(1)] += 1
    return counts


def loop_module(dump_dir: str, side: str) -> str:
    """The largest optimised module of `side`'s training loop in `dump_dir`."""
    found = [path for path in glob.glob(os.path.join(dump_dir, "*after_optimizations.txt"))
             if _LOOP_MODULE[side].search(os.path.basename(path))]
    if not found:
        cli.fail(f"{side}: no training-loop module among the dumps in {dump_dir}")
    return max(found, key=os.path.getsize)


def dump(side: str, dump_dir: str) -> None:
    """Runs `side`'s training briefly with XLA dumping its modules into `dump_dir`."""
    hidden = FLAGS.hidden_sizes
    if side == "mnist_tf":
        args = [os.path.join(HERE, "train_throughput.py"), f"--hidden_sizes={hidden}",
                f"--batch_size={FLAGS.batch_size}", f"--pipeline={FLAGS.pipeline}",
                f"--examples={FLAGS.examples}", "--repeats=1", "--nokeras", "--nojax",
                "--matmul_size=64"]
    else:
        args = [os.path.join(HERE, "jax_reference.py"), f"--hidden_sizes={hidden}",
                f"--batch_size={FLAGS.batch_size}", f"--examples={FLAGS.examples}",
                "--epochs=1"]
    env = dict(os.environ, XLA_FLAGS=f"--xla_dump_to={dump_dir} --xla_dump_hlo_as_text")
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        cli.fail(f"{side}: {os.path.basename(args[0])} failed: "
                 f"{result.stderr.strip().splitlines()[-1:]}")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    counts = {}
    with tempfile.TemporaryDirectory() as scratch:
        for side in ("mnist_tf", "jax"):
            dump_dir = os.path.join(scratch, side)
            dump(side, dump_dir)
            counts[side] = opcodes(loop_module(dump_dir, side))
    names = sorted(set(counts["mnist_tf"]) | set(counts["jax"]),
                   key=lambda op: (-abs(counts["mnist_tf"][op] - counts["jax"][op]), op))
    machine = common.machine()
    rows = [("cpu", common.describe_cpu(machine)),
            ("model", f"784-{FLAGS.hidden_sizes.replace(',', '-')}-10 MLP, batch "
                      f"{FLAGS.batch_size}; mnist_tf's --pipeline={FLAGS.pipeline}"),
            ("opcode", "mnist_tf / JAX instructions (most different first)")]
    rows += [(op, f"{counts['mnist_tf'][op]} / {counts['jax'][op]}") for op in names]
    rows.append(("total", f"{sum(counts['mnist_tf'].values())} / {sum(counts['jax'].values())}"))
    common.report("Compiled training loops", rows, {
        "benchmark": "hlo_compare", "hidden_sizes": FLAGS.hidden_sizes,
        "batch_size": FLAGS.batch_size, "pipeline": FLAGS.pipeline,
        "mnist_tf_opcodes": dict(counts["mnist_tf"]), "jax_opcodes": dict(counts["jax"]),
        **machine}, FLAGS.output)


if __name__ == "__main__":
    cli.run(main)
