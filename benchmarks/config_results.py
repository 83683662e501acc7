"""Trains every shipped config and prints the README's results table.

    python benchmarks/config_results.py                       # every config, seed 0
    python benchmarks/config_results.py --configs=best --seeds=0,1,2

Each (config, seed) is one fresh `python -m mnist_tf.train --config=NAME
--seed=S` process in its own new workdir (under --workdir_root, a temporary
directory by default, removed at the end), so a complete run is never re-used.
Its wall time is the whole process, spawn to exit: interpreter start, imports,
data loading from the prepared TFDS copy, tracing and XLA compilation, every
evaluation and checkpoint all count. Accuracies are read from the run's
results.json: the official 10,000-image test set, and the validation split the
config carves from the training images ("—" for a config without one).

With several seeds a cell is the median with the range in parentheses. The
machine (lscpu: model, avx2, avx512f, cores) heads the table and is a column
of it, so rows from other machines can be added beside it. Prints one line per
run as it finishes, the Markdown table, then one JSON line.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def define_flags() -> None:
    """This script's flags (defined only when it is run, not when a test imports it)."""
    from absl import flags

    flags.DEFINE_list("configs", None, "Shipped configs to run (default: every one).")
    flags.DEFINE_list("seeds", ["0"], "Seeds to run each config with.")
    flags.DEFINE_multi_string("extra_flag", [], "Extra flag for every run (repeatable).")
    flags.DEFINE_string("workdir_root", None,
                        "Where the runs' workdirs go (default: a temporary directory, "
                        "removed at the end); must not hold runs of the same names.")
    flags.DEFINE_string("output", None, "Also write the JSON line to this file.")


def run_config(name: str, seed: int, workdir: str, extra_flags: list[str]) -> dict:
    """Trains one shipped config with one seed in a fresh process; its figures.

    Returns:
        {"config", "seed", "test_accuracy", "validation_accuracy" (None without
        a validation split), "wall_seconds" (spawn to exit), "params_sha256"}.

    Raises:
        RuntimeError: the run failed (its output's tail is in the message).
    """
    command = [sys.executable, "-m", "mnist_tf.train", f"--config={name}", f"--seed={seed}",
               f"--workdir={workdir}", *extra_flags]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n"
                           f"{done.stderr[-3000:]}")
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    return {"config": name, "seed": seed, "test_accuracy": results["test_accuracy"],
            "validation_accuracy": results.get("validation_accuracy"),
            "wall_seconds": round(wall, 1), "params_sha256": results["params_sha256"]}


def spread(values: list[float | None], fmt) -> str:
    """"median (min–max)" over seeds, the value alone for one seed, "—" if there is none."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def seconds(value: float) -> str:
    return f"{value:.0f} s"


def machine_cell(machine: dict) -> str:
    """The machine as the README's tables name it: model, lscpu's avx2/avx512f, cores."""
    features = "avx512f" if machine["avx512f"] else "avx2" if machine["avx2"] else "no avx2"
    return f"{machine['cpu_model']} ({features}, {machine['cpu_count']} cores)"


def table(runs: list[dict], machine: dict) -> list[str]:
    """The Markdown results table: one row per config, seeds folded into each cell."""
    seeds = sorted({r["seed"] for r in runs})
    lines = ["| config | test accuracy | validation accuracy | wall time | seeds | machine |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name in dict.fromkeys(r["config"] for r in runs):
        mine = [r for r in runs if r["config"] == name]
        lines.append(
            f"| `{name}.cfg` | {spread([r['test_accuracy'] for r in mine], percent)} "
            f"| {spread([r['validation_accuracy'] for r in mine], percent)} "
            f"| {spread([r['wall_seconds'] for r in mine], seconds)} "
            f"| {','.join(str(r['seed']) for r in mine) if len(seeds) > 1 else seeds[0]} "
            f"| {machine_cell(machine)} |")
    return lines


def main(argv):
    del argv
    from absl import flags

    from mnist_tf import cli, config
    from mnist_tf.errors import UserError

    options = flags.FLAGS
    names = options.configs or config.shipped_configs()
    try:
        for name in names:
            config.shipped_config(name)  # A name that is not shipped fails before any run.
        seeds = [int(seed) for seed in options.seeds]
    except UserError as e:
        cli.fail(str(e).replace("--config:", "--configs:", 1))
    except ValueError:
        cli.fail(f"--seeds: {','.join(options.seeds)} is not a list of integers (e.g. 0,1,2)")
    root = options.workdir_root or tempfile.mkdtemp(prefix="config_results_")
    planned = [(name, seed, os.path.join(root, f"{name}_seed{seed}"))
               for name in names for seed in seeds]
    taken = [workdir for _, _, workdir in planned if os.path.exists(workdir)]
    if taken:  # Checked before any run: a run must never resume or re-use another's workdir.
        cli.fail(f"--workdir_root: {taken[0]} exists; give an empty or new --workdir_root")
    machine = {**common.cpu(), "cpu_count": os.cpu_count()}
    print(f"Machine: {machine_cell(machine)}", flush=True)
    runs = []
    try:
        for name, seed, workdir in planned:
            run = run_config(name, seed, workdir, options.extra_flag)
            runs.append(run)
            print(f"{name} seed {seed}: test {percent(run['test_accuracy'])}, validation "
                  f"{spread([run['validation_accuracy']], percent)}, "
                  f"{run['wall_seconds']:.1f} s", flush=True)
    finally:
        if not options.workdir_root:
            shutil.rmtree(root, ignore_errors=True)
    print("\n".join(table(runs, machine)))
    line = json.dumps({"machine": machine, "runs": runs}, sort_keys=True)
    print(line)
    if options.output:
        with open(options.output, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    from absl import app

    define_flags()
    app.run(main)
