"""Smoke tests: every benchmark runs end to end for a few steps and prints its JSON.

These check that the scripts work and report what they claim, not speed
(timings on a shared 2-core machine are not assertions).
"""

import json
import subprocess
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import common  # noqa: E402  (benchmarks/common.py: no flags, no TensorFlow at import)


def run_benchmark(script, *args, timeout=300):
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args],
                            cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]), lines


# Every figure train_throughput.py prints in its JSON line.
THROUGHPUT_KEYS = {
    "hidden_sizes", "batch_size", "precision", "dropout", "data", "examples_per_epoch",
    "repeats", "tf_device", "mnist_tf_default_flags", "mnist_tf_overrides", "mnist_tf_flags",
    "mnist_tf_runner", "examples_per_second", "epoch_seconds", "burn_in_seconds", "step_flops",
    "flops_per_example", "step_gflops", "matmul_gflops", "matmul_gflops_tf_kernel",
    "matmul_gflops_xla", "matmul_size", "fraction_of_matmul_rate", "step_matmuls_gflops",
    "step_matmuls_gflops_tf_kernel", "step_matmuls_gflops_xla",
    "step_matmuls_examples_per_second", "fraction_of_step_matmuls", "cpu_model", "avx2",
    "avx512f", "cpu_count", "tensorflow",
    "speedup_vs_keras_default", "speedup_vs_keras_tuned",
    *(f"keras_{variant}_{figure}" for variant in ("default", "tuned") for figure in (
        "examples_per_second", "epoch_seconds", "burn_in_seconds", "jit_compile",
        "steps_per_execution")),
}


def test_train_throughput_measures_default_flags_against_keras_default_and_tuned(tmp_path):
    out = tmp_path / "out.json"
    # An empty data dir: the benchmark falls back to random data and says so. 256-128, the
    # model whose per-example FLOPs the README quotes; batch 16 keeps it small.
    result, lines = run_benchmark(
        "train_throughput.py", "--hidden_sizes=256,128", "--batch_size=16", "--examples=500",
        "--repeats=1", "--dropout=0.1", "--matmul_size=256", "--precision=mixed_bfloat16",
        f"--data_dir={tmp_path}", f"--output={out}")
    assert json.loads(out.read_text()) == result
    assert THROUGHPUT_KEYS <= result.keys(), THROUGHPUT_KEYS - result.keys()
    assert result["data"] == "random" and result["precision"] == "mixed_bfloat16"
    assert result["examples_per_epoch"] == 496  # Cut to whole batches of 16.
    # mnist_tf as TrainConfig's defaults have it, through the trainer's own runner.
    from mnist_tf.config import TrainConfig

    defaults = TrainConfig()
    assert result["mnist_tf_default_flags"] is True and result["mnist_tf_overrides"] == {}
    assert result["mnist_tf_flags"] == {"data_on_device": defaults.data_on_device,
                                        "jit_compile": defaults.jit_compile,
                                        "steps_per_call": defaults.steps_per_call}
    assert result["mnist_tf_runner"].endswith("Runner")
    # Keras default resolves jit_compile="auto" (off on a CPU-only machine); the tuned run
    # compiles and runs as many steps per execution as mnist_tf runs per call.
    assert result["keras_default_steps_per_execution"] == 1
    assert result["keras_tuned_jit_compile"] is True
    assert result["keras_tuned_steps_per_execution"] == defaults.steps_per_call
    for rate in ("examples_per_second", "keras_default_examples_per_second",
                 "keras_tuned_examples_per_second"):
        assert result[rate] > 0
    for variant in ("default", "tuned"):  # Both sides are rounded in the JSON.
        assert result[f"speedup_vs_keras_{variant}"] == pytest.approx(
            result["examples_per_second"] / result[f"keras_{variant}_examples_per_second"],
            rel=1e-2)
    # Exact FLOPs: 784-256-128-10 is 1.007104 MFLOP per example (forward and weight
    # gradients of every layer, input gradients of all but the first).
    assert result["flops_per_example"] == 1_007_104
    assert result["step_flops"] == 16 * 1_007_104
    assert result["matmul_gflops"] == max(result["matmul_gflops_tf_kernel"],
                                          result["matmul_gflops_xla"])
    assert result["step_matmuls_gflops"] == max(result["step_matmuls_gflops_tf_kernel"],
                                                result["step_matmuls_gflops_xla"])
    assert result["step_matmuls_examples_per_second"] == pytest.approx(
        result["step_matmuls_gflops"] * 1e9 / result["flops_per_example"], rel=1e-2)
    assert result["fraction_of_matmul_rate"] > 0
    # The JSON rounds fractions to 4 decimals: at these tiny sizes a fraction
    # like 0.0039 is 1 % off its unrounded value, hence the absolute tolerance.
    assert result["fraction_of_matmul_rate"] == pytest.approx(
        result["step_gflops"] / result["matmul_gflops"], rel=1e-2, abs=1e-4)
    assert result["fraction_of_step_matmuls"] == pytest.approx(
        result["examples_per_second"] / result["step_matmuls_examples_per_second"], rel=1e-2,
        abs=1e-4)
    assert isinstance(result["avx2"], bool) and isinstance(result["avx512f"], bool)
    assert result["cpu_model"]
    assert lines[2].startswith("cpu ") and "avx512f" in lines[2]
    assert any(line.startswith("mnist_tf (default flags)") for line in lines)
    assert any(line.startswith("mnist_tf / Keras tuned") for line in lines)


def test_train_throughput_overrides_are_reported(tmp_path):
    result, lines = run_benchmark(
        "train_throughput.py", "--hidden_sizes=16", "--batch_size=64", "--examples=1024",
        "--repeats=1", "--pipeline=device", "--steps_per_call=4", "--nojit_compile",
        "--matmul_size=128", "--nokeras", "--jax", "--rounds=2", f"--data_dir={tmp_path}")
    assert result["mnist_tf_default_flags"] is False
    assert result["mnist_tf_overrides"] == {"data_on_device": True, "jit_compile": False,
                                            "steps_per_call": 4}
    assert result["mnist_tf_flags"] == result["mnist_tf_overrides"]
    assert result["mnist_tf_runner"] == "DeviceLoopRunner"
    # 2·B·(784·16 + 16·10) forward, the same for weight gradients, 2·B·16·10 input gradients.
    assert result["step_flops"] == 64 * (4 * (784 * 16 + 16 * 10) + 2 * 16 * 10)
    assert result["examples_per_second"] > 0
    assert not any(key.startswith("keras_") for key in result)
    # The JAX reference on the same examples, interleaved with mnist_tf over 2 rounds.
    assert len(result["jax_round_examples_per_second"]) == len(
        result["round_examples_per_second"]) == 2
    assert result["jax_steps_per_scan"] == 4 and result["jax_examples_per_second"] > 0
    assert result["speedup_vs_jax"] == pytest.approx(
        result["examples_per_second"] / result["jax_examples_per_second"], rel=1e-2)


def test_input_pipeline_drains_the_real_pipeline(small_data_dir):
    result, _ = run_benchmark("input_pipeline.py", f"--data_dir={small_data_dir}",
                              "--batch_size=32", "--validation_size=100", "--repeats=1")
    assert result["examples_per_second"] > 0
    assert result["load_seconds_cold"] > 0 and result["load_seconds_warm"] > 0


def test_time_to_accuracy_times_both_from_process_start_and_counts_a_miss(small_data_dir):
    result, lines = run_benchmark(
        "time_to_accuracy.py", f"--data_dir={small_data_dir}", "--repeats=1", "--target=0.5",
        "--eval_every_examples=128", "--extra_flag=--epochs=5",
        "--extra_flag=--nojit_compile",  # XLA compile time is not what this test checks.
        # One hidden unit, one epoch: Keras cannot reach 50 % and ends as a failure.
        "--keras_hidden_sizes=1", "--keras_max_epochs=1")
    ours, keras = result["mnist_tf_runs"][0], result["keras_fit_runs"][0]
    # The synthetic digits are easy: mnist_tf gets there, within the 5 epochs.
    assert ours["reached"] is True and ours["seconds"] > 0
    assert 0 < ours["epoch"] <= 5 and ours["final_test_accuracy"] >= 0.5
    assert result["mnist_tf_failures"] == 0 and result["mnist_tf_seconds"] == ours["seconds"]
    # The miss is shown and counted at its whole run's length, not dropped.
    assert keras["reached"] is False and keras["step"] is None and keras["seconds"] > 0
    assert result["keras_fit_failures"] == 1 and result["keras_fit_seconds"] == keras["seconds"]
    assert any("FAILED: missed" in line for line in lines)
    assert result["fraction_of_keras_time"] == pytest.approx(ours["seconds"] / keras["seconds"],
                                                             rel=1e-2)
    assert result["config"] == "configs/fast.cfg"
    # The JAX recipe (installed with the dev extras) is timed the same way, from spawn.
    jax = result["jax_runs"][0]
    assert jax["seconds"] > 0 and result["jax_seconds"] == jax["seconds"]
    assert result["fraction_of_jax_time"] == pytest.approx(ours["seconds"] / jax["seconds"],
                                                           rel=1e-2)


def test_a_missed_target_is_a_failure_at_its_whole_run_time():
    # Spawned at 100: reached at 110; another reached at 112; one missed, exited at 200.
    runs = [common.attempt(100.0, 150.0, 110.0), common.attempt(100.0, 130.0, 112.0),
            common.attempt(100.0, 200.0, None)]
    assert runs == [{"reached": True, "seconds": 10.0}, {"reached": True, "seconds": 12.0},
                    {"reached": False, "seconds": 100.0}]
    # The median of all three (dropping the miss would give 11).
    assert common.summarize_attempts(runs) == {"median_seconds": 12.0, "failures": 1}
    # Mostly failures: the median is a failure's whole-run time.
    runs = [common.attempt(0.0, 90.0, None), common.attempt(0.0, 100.0, None),
            common.attempt(0.0, 50.0, 10.0)]
    assert common.summarize_attempts(runs) == {"median_seconds": 90.0, "failures": 2}


def test_memory_reports_each_process_peak_and_the_ratio(small_data_dir):
    train_flags = ["--hidden_sizes=16", "--batch_size=32", "--validation_size=0", "--epochs=1",
                   "--histogram_every_steps=0", "--eval_batch_size=100", "--nojit_compile"]
    result, lines = run_benchmark(
        "memory.py", f"--data_dir={small_data_dir}", "--repeats=1",
        *(f"--train_flag={flag}" for flag in train_flags))
    # The Keras run's model and length come from mnist_tf's results.json.
    assert result["hidden_sizes"] == [16] and result["batch_size"] == 32
    assert result["epochs"] == 1 and result["keras_pixels"] == "divide"
    assert result["train_flags"] == train_flags
    floor, ours, keras = (result[f"{name}_peak_rss_mib"] for name in ("floor", "mnist_tf", "keras"))
    # Each process loads TensorFlow (hundreds of MiB); training adds to that floor.
    assert 100 < floor < ours and floor < keras
    assert result["mnist_tf_runs"][0]["peak_rss_mib"] == ours
    assert result["mnist_tf_over_keras"] == pytest.approx(ours / keras, rel=1e-3)
    assert result["mnist_tf_over_keras_above_floor"] == pytest.approx(
        (ours - floor) / (keras - floor), rel=1e-2)
    assert any(line.startswith("mnist_tf / Keras") for line in lines)


def test_stop_latency_stops_saves_a_checkpoint_and_resumes(tmp_path, small_data_dir):
    config = tmp_path / "small.cfg"
    config.write_text("\n".join([
        "--hidden_sizes=32", "--batch_size=32", "--validation_size=0", "--train_steps=200",
        "--log_every_steps=10", "--checkpoint_every_steps=1000", "--histogram_every_steps=0",
        "--eval_batch_size=100", "--nodownload",
        "--nojit_compile"]) + "\n")  # XLA compile time is not what this test checks.
    result, lines = run_benchmark("stop_latency.py", f"--config={config}",
                                  f"--data_dir={small_data_dir}", "--after_steps=20",
                                  # At once: a random delay could outlast the short run.
                                  "--jitter_seconds=0", "--repeats=1", "--signal=SIGINT")
    assert result["signal"] == "SIGINT" and result["resumed"] is True
    assert result["median_seconds"] == result["seconds"][0] > 0
    # Stopped mid-run: after the signal, before the end (no checkpoint was due there).
    assert 20 <= result["stopped_at_steps"][0] < 200
    assert any(line.startswith("signal to exit") for line in lines)


def test_step_ablation_times_every_guard_on_both_paths(tmp_path):
    result, lines = run_benchmark(
        "step_ablation.py", "--hidden_sizes=16", "--batch_size=64", "--examples=1024",
        "--repeats=1", "--rounds=1", f"--data_dir={tmp_path}")
    rates = result["examples_per_second"]
    assert set(rates) == {f"{path}_guard_{kind}" for path in ("tfdata", "device")
                          for kind in ("every", "biases", "none")}
    assert all(rate > 0 for rate in rates.values()) and result["examples_per_epoch"] == 1024
    assert any(line.startswith("device, guard=biases") for line in lines)


def test_hlo_compare_counts_both_compiled_loops():
    result, lines = run_benchmark("hlo_compare.py", "--hidden_sizes=16", "--batch_size=32",
                                  "--examples=1600", "--pipeline=device")
    ours, jax = result["mnist_tf_opcodes"], result["jax_opcodes"]
    # Each is a training loop: a forward and backward pass of both layers' matmuls.
    assert ours["dot"] >= 4 and jax["dot"] >= 4 and ours["fusion"] > 0 and jax["fusion"] > 0
    assert any(line.startswith("dot ") for line in lines)
