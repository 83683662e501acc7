"""Smoke tests: every benchmark runs end to end for a few steps and prints its JSON.

These check that the scripts work and report what they claim, not speed
(timings on a shared 2-core machine are not assertions).
"""

import json
import subprocess
import sys

import pytest
from conftest import REPO


def run_benchmark(script, *args, timeout=300):
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args],
                            cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]), lines


def test_train_throughput_reports_both_trainers_and_the_matmul_rate(tmp_path):
    out = tmp_path / "out.json"
    # An empty data dir: the benchmark falls back to random data and says so.
    result, lines = run_benchmark(
        "train_throughput.py", "--hidden_sizes=16", "--batch_size=64", "--examples=1024",
        "--repeats=1", "--pipeline=device", "--steps_per_call=4", "--jit_compile",
        "--dropout=0.1", "--matmul_size=256", "--precision=mixed_bfloat16",
        f"--data_dir={tmp_path}", f"--output={out}")
    assert json.loads(out.read_text()) == result
    assert result["data"] == "random" and result["precision"] == "mixed_bfloat16"
    assert result["matmul_gflops"] == max(result["matmul_gflops_tf_kernel"],
                                          result["matmul_gflops_xla"])
    assert result["examples_per_second"] > 0 and result["keras_fit_examples_per_second"] > 0
    assert result["speedup_vs_keras_fit"] == pytest.approx(
        result["examples_per_second"] / result["keras_fit_examples_per_second"], rel=1e-2)
    # 2·B·(784·16 + 16·10) forward, the same for weight gradients, 2·B·16·10 input gradients.
    assert result["step_flops"] == 64 * (4 * (784 * 16 + 16 * 10) + 2 * 16 * 10)
    # Both sides are rounded in the JSON, hence the tolerance.
    assert result["fraction_of_matmul_rate"] > 0
    assert result["fraction_of_matmul_rate"] == pytest.approx(
        result["step_gflops"] / result["matmul_gflops"], rel=1e-2)
    assert any(line.startswith("speed-up vs Keras") for line in lines)


def test_input_pipeline_drains_the_real_pipeline(small_data_dir):
    result, _ = run_benchmark("input_pipeline.py", f"--data_dir={small_data_dir}",
                              "--batch_size=32", "--validation_size=100", "--repeats=1")
    assert result["examples_per_second"] > 0
    assert result["load_seconds_cold"] > 0 and result["load_seconds_warm"] > 0


def test_time_to_accuracy_times_both_from_process_start(small_data_dir):
    result, lines = run_benchmark(
        "time_to_accuracy.py", f"--data_dir={small_data_dir}", "--repeats=1", "--target=0.5",
        "--eval_every_examples=128", "--keras_hidden_sizes=32", "--extra_flag=--epochs=5",
        "--extra_flag=--nojit_compile")  # XLA compile time is not what this test checks.
    ours, keras = result["mnist_tf_runs"][0], result["keras_fit_runs"][0]
    # The synthetic digits are easy: both get there, within the 5 epochs.
    assert ours["seconds"] > 0 and keras["seconds"] > 0
    assert 0 < ours["epoch"] <= 5 and ours["final_test_accuracy"] >= 0.5
    assert result["fraction_of_keras_time"] == pytest.approx(ours["seconds"] / keras["seconds"],
                                                             rel=1e-2)
    assert result["config"] == "configs/fast.cfg"


def test_stop_latency_stops_saves_a_checkpoint_and_resumes(tmp_path, small_data_dir):
    config = tmp_path / "small.cfg"
    config.write_text("\n".join([
        "--hidden_sizes=32", "--batch_size=32", "--validation_size=0", "--train_steps=200",
        "--log_every_steps=10", "--checkpoint_every_steps=1000", "--histogram_every_steps=0",
        "--eval_batch_size=100", "--nodownload"]) + "\n")
    result, lines = run_benchmark("stop_latency.py", f"--config={config}",
                                  f"--data_dir={small_data_dir}", "--after_steps=20",
                                  # At once: a random delay could outlast the short run.
                                  "--jitter_seconds=0", "--repeats=1", "--signal=SIGINT")
    assert result["signal"] == "SIGINT" and result["resumed"] is True
    assert result["median_seconds"] == result["seconds"][0] > 0
    # Stopped mid-run: after the signal, before the end (no checkpoint was due there).
    assert 20 <= result["stopped_at_steps"][0] < 200
    assert any(line.startswith("signal to exit") for line in lines)
