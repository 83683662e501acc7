"""benchmarks/augment_cost.py: a smoke run at the smallest sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "augment_cost.py"


def test_augment_cost_times_both_warps_and_a_step(tmp_path):
    out = tmp_path / "cost.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--batch_size=16", "--batches=2", "--repeats=1",
         "--hidden_sizes=16", f"--output={out}"], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["affine_ms_per_batch"] > 0 and figures["step_ms"] > 0
    assert figures["elastic_extra_ms_per_batch"] == pytest.approx(
        figures["affine_elastic_ms_per_batch"] - figures["affine_ms_per_batch"], abs=2e-4)
    assert "affine + elastic" in result.stdout and figures["avx2"] in (True, False)
