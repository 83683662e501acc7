"""Inputs that slipped past the checks: config types, odd pixel data, read-only outputs.

Each case ends as the project's bad inputs do: one line naming the culprit and
the fix (a `UserError` in Python, exit status 2 on the command line), or, for
input that is legal but probably a mistake, one warning line.
"""

import numpy as np
import pytest
from conftest import assert_usage_error, run_module

from mnist_tf import config
from mnist_tf.config import ConfigError, TrainConfig


@pytest.mark.parametrize("field, value, fragment", [
    ("deterministic", "no", "--deterministic: must be true or false (a bool), got 'no' (str)"),
    ("batch_size", True, "--batch_size: must be an integer, got True (bool)"),
    ("epochs", 0.05, "--epochs: must be an integer, got 0.05 (float)"),
    ("hidden_sizes", (32.5,), "--hidden_sizes: must be a tuple of integers, got (32.5,)"),
    ("hidden_sizes", "32", "--hidden_sizes: must be a tuple of integers, got '32' (str)"),
    ("hidden_sizes", (True,), "--hidden_sizes: must be a tuple of integers"),
    ("profile_steps", (1.0, 2.0), "--profile_steps: must be a tuple of integers"),
    ("learning_rate", "0.1", "--learning_rate: must be a number, got '0.1' (str)"),
    ("lr_schedule", 3, "--lr_schedule: must be a string, got 3 (int)"),
    ("device", None, "--device: must be a string, got None (NoneType)"),
    ("epochs", np.float64(2.0), "got np.float64(2.0) (numpy.float64)"),
])
def test_config_refuses_values_of_the_wrong_type(field, value, fragment):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{field: value})
    assert fragment in str(info.value)
    assert info.value.field == field


def test_config_takes_what_json_and_numpy_give_as_the_declared_types():
    loaded = TrainConfig(hidden_sizes=[16, 8], profile_steps=[1, 2], learning_rate=1,
                         dropout=np.float32(0.25), batch_size=np.int64(64),
                         deterministic=np.bool_(True))
    assert loaded.hidden_sizes == (16, 8) and loaded.profile_steps == (1, 2)
    assert type(loaded.learning_rate) is float and loaded.learning_rate == 1.0
    assert type(loaded.dropout) is float and type(loaded.batch_size) is int
    assert loaded.deterministic is True
    assert TrainConfig(**loaded.to_dict()) == loaded
    assert all(type(getattr(TrainConfig(), name)) is declared or name in (
        "hidden_sizes", "profile_steps") for name, declared in config.field_types().items())


def test_config_bounds_the_seed_to_what_every_use_takes():
    assert TrainConfig(seed=config.MAX_SEED).seed == 2**32 - 1
    with pytest.raises(ConfigError, match=r"--seed: must be at most 4294967295"):
        TrainConfig(seed=2**32)


def test_train_refuses_a_seed_too_large_in_one_line(tmp_path, small_data_dir):
    workdir = tmp_path / "run"
    result = run_module("mnist_tf.train", f"--workdir={workdir}", f"--data_dir={small_data_dir}",
                        "--nodownload", "--seed=4294967296", "--hidden_sizes=8",
                        "--train_steps=2", "--nojit_compile")
    assert_usage_error(result, "--seed", "at most 4294967295", "got 4294967296")
    assert not workdir.exists()


def test_hidden_sizes_help_says_empty_is_a_linear_classifier():
    (flag,) = [f for f in config.train_flags() if f.name == "hidden_sizes"]
    assert "(empty: no hidden layer, a linear classifier)" in flag.help
    assert TrainConfig.from_flag_values(
        {**{f.name: f.default for f in config.train_flags()}, "hidden_sizes": ""}
    ).hidden_sizes == ()
