"""benchmarks/config_results.py: the results table's cells, and the README's table.

The script's runs are whole trainings (minutes to a quarter of an hour each),
so the suite checks how it turns runs into the table, and that the README's
table, which is that output, has one row for every shipped config.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location(
    "config_results", REPO / "benchmarks" / "config_results.py")
config_results = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(config_results)

MACHINE = {"cpu_model": "AMD EPYC", "avx2": True, "avx512f": False, "cpu_count": 2}


def run(name, seed, test, validation, wall):
    return {"config": name, "seed": seed, "test_accuracy": test,
            "validation_accuracy": validation, "wall_seconds": wall, "params_sha256": "x"}


def test_one_seed_gives_the_values_and_a_dash_without_a_validation_split():
    lines = config_results.table(
        [run("default", 0, 0.9831, 0.9842, 67.5), run("seed_001", 0, 0.9758, None, 19.2)],
        MACHINE)
    assert lines[2] == ("| `default.cfg` | 98.31 % | 98.42 % | 68 s | 0 "
                        "| AMD EPYC (avx2, 2 cores) |")
    assert lines[3] == "| `seed_001.cfg` | 97.58 % | — | 19 s | 0 | AMD EPYC (avx2, 2 cores) |"


def test_several_seeds_give_the_median_and_the_range():
    runs = [run("best", 0, 0.9951, 0.9960, 800.0), run("best", 1, 0.9948, 0.9956, 810.0),
            run("best", 2, 0.9955, 0.9962, 790.0)]
    (row,) = config_results.table(runs, {**MACHINE, "avx512f": True})[2:]
    assert row == ("| `best.cfg` | 99.51 % (99.48 %–99.55 %) | 99.60 % (99.56 %–99.62 %) "
                   "| 800 s (790 s–810 s) | 0,1,2 | AMD EPYC (avx512f, 2 cores) |")


def test_a_run_that_fails_says_which_command_and_why(tmp_path):
    with pytest.raises(RuntimeError, match=r"--config=no_such_config .*exited 2"):
        config_results.run_config("no_such_config", 0, str(tmp_path / "w"), [])


def test_the_readme_results_table_has_every_shipped_config():
    from mnist_tf import config

    readme = (REPO / "docs" / "training.md").read_text()
    start = readme.index("\n### Results of every config\n")
    body = readme[start:readme.index("\n#", start + 1)]
    rows = re.findall(r"^\| `(\w+)\.cfg` \|(.*)\|$", body, flags=re.M)
    assert {name for name, _ in rows} == set(config.shipped_configs())
    for name, cells in rows:  # Test and validation accuracy, wall time, machine.
        test, validation, wall, _, machine = (c.strip() for c in cells.split("|"))
        assert re.match(r"\d\d\.\d\d %", test), (name, test)
        assert re.match(r"(\d\d\.\d\d %|—)", validation), (name, validation)
        assert re.match(r"\d+ s", wall) and re.search(r"avx", machine), (name, cells)


@pytest.mark.parametrize("args, fragment", [
    (["--configs=best,nosuch"], "error: --configs: no shipped config 'nosuch'"),
    (["--configs=default", "--seeds=0,x"], "error: --seeds: 0,x is not a list of integers"),
])
def test_bad_arguments_stop_before_any_run_with_one_line(args, fragment):
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "config_results.py"),
                             *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        result.stderr.strip()], result.stderr
    assert result.stderr.startswith(fragment) and "Machine:" not in result.stdout


def test_an_occupied_workdir_root_is_refused_before_any_run(tmp_path):
    (tmp_path / "fast_seed1").mkdir()
    (tmp_path / "fast_seed1" / "results.json").write_text("{}")
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "config_results.py"),
                             "--configs=fast", "--seeds=0,1", f"--workdir_root={tmp_path}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: --workdir_root: {tmp_path / 'fast_seed1'} exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fast_seed1"]  # Seed 0 never ran.
    assert (tmp_path / "fast_seed1" / "results.json").read_text() == "{}"
