"""benchmarks/step_profile.py: the per-step accounting of a profiler trace."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import step_profile  # noqa: E402


def _event(name, dur, thread="tf_numa_-1_Eigen/1"):
    return {"name": name, "dur": dur, "thread": thread}


def test_summarize_splits_wall_time_into_matmuls_other_ops_and_the_gap():
    events = [
        _event("train_call", 10_000, thread="python"),  # 2 steps: 5 ms each.
        _event("MatMul.1", 4_000), _event("MatMul_1.2", 2_000, thread="tf_numa_-1_Eigen/2"),
        _event("multiply_add_fusion", 1_000),
        _event("ThunkExecutor::Execute", 9_000),  # Encloses the ops: not counted again.
        _event("MatMul.9", 7_000, thread="tf_Compute/3"),  # Not an intra-op thread.
    ]
    figures = step_profile.summarize(events, steps=2, top=2)

    assert figures["wall_ms_per_step"] == pytest.approx(5.0)
    assert figures["matmul_ms_per_step"] == pytest.approx(3.0)
    assert figures["other_ops_ms_per_step"] == pytest.approx(0.5)
    assert figures["gap_ms_per_step"] == pytest.approx(1.5)
    assert list(figures["top_ops_ms_per_step"]) == ["MatMul.1", "MatMul_1.2"]


def test_the_script_profiles_a_real_run_and_accounts_for_its_wall_time(small_data_dir, tmp_path):
    import json
    import os
    import subprocess

    out, scratch = tmp_path / "profile.json", tmp_path / "tmp"
    scratch.mkdir()
    result = subprocess.run(
        [sys.executable, str(Path(step_profile.__file__)), f"--data_dir={small_data_dir}",
         "--hidden_sizes=16", "--batch_size=32", "--epochs=1", "--profile_steps=2,12",
         f"--output={out}"], capture_output=True, text=True, timeout=240,
        env={**os.environ, "TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())

    assert figures["profile_steps"] == [2, 12]
    assert figures["matmul_ms_per_step"] > 0  # XLA's matmul thunks were found in the trace.
    parts = sum(figures[k] for k in ("matmul_ms_per_step", "other_ops_ms_per_step",
                                     "gap_ms_per_step"))
    assert parts == pytest.approx(figures["wall_ms_per_step"], abs=1e-3)
    # The scratch workdir is removed (TensorFlow leaves autograph files there too).
    assert not list(scratch.glob("mnist_tf_step_profile_*"))
