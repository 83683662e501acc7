"""`python -m mnist_tf.train` from any directory: --config=NAME, and a flagfile not found."""

import json
import os
from pathlib import Path

import pytest
import tomllib
from conftest import REPO, assert_usage_error, run_module

from mnist_tf import cli, config
from mnist_tf.errors import UserError


def train_in(cwd, *args):
    return run_module("mnist_tf.train", *args, cwd=cwd)


def test_a_flagfile_not_found_names_the_path_tried_and_the_fix(tmp_path):
    result = train_in(tmp_path, "--flagfile=configs/default.cfg")
    assert_usage_error(
        result, f"--flagfile: {tmp_path / 'configs' / 'default.cfg'} does not exist (a relative "
        "path is read from the current directory); run from the repository root, give the "
        "file's full path, or use --config=default")
    assert "ERROR" not in result.stderr
    assert os.listdir(tmp_path) == []  # Nothing created (no runs/default).
    # A file that is no shipped config gets no --config hint; a directory is named as one.
    (tmp_path / "mine.cfg").mkdir()
    result = train_in(tmp_path, "--hidden_sizes=8", "--flagfile", "mine.cfg")
    assert_usage_error(result, f"--flagfile: {tmp_path / 'mine.cfg'} is a directory",
                       "give the file's full path, or its path from the current directory")
    assert "--config" not in result.stderr


def test_an_unknown_config_lists_the_shipped_ones(tmp_path):
    assert_usage_error(train_in(tmp_path, "--config=defualt"),
                       "--config: no shipped config 'defualt'; choose one of best, default, fast,",
                       "or give a file with --flagfile=PATH")


def test_config_inside_a_flagfile_is_refused(tmp_path):
    (tmp_path / "my.cfg").write_text("--config=default\n")
    assert_usage_error(train_in(tmp_path, "--flagfile=my.cfg"),
                       "--config=default: give --config on the command line")


def test_config_by_name_trains_from_another_directory_into_it(tmp_path, small_data_dir):
    result = train_in(tmp_path, "--config=default", f"--data_dir={small_data_dir}",
                      "--nodownload", "--hidden_sizes=8", "--batch_size=50",
                      "--validation_size=100", "--train_steps=2", "--nojit_compile",
                      "--eval_batch_size=200")
    assert result.returncode == 0, result.stderr
    workdir = tmp_path / "runs" / "default"  # default.cfg's relative workdir, from here.
    assert result.stdout.splitlines()[0] == f"Workdir: {workdir}"
    flags = json.loads((workdir / "results.json").read_text())["flags"]
    # default.cfg's values, and the flags after --config override them.
    assert flags["lr_schedule"] == "cosine" and flags["warmup_steps"] == 200
    assert flags["dropout"] == 0.2 and flags["hidden_sizes"] == [8]


def test_config_expands_in_place_so_later_flags_win():
    path = config.shipped_config("default")
    argv = ["train", "--epochs=3", "--config=default", "--seed=1", "--config", "fast.cfg",
            "--", "--config=x"]
    assert cli.expand_config_flags(argv) == [
        "train", "--epochs=3", f"--flagfile={path}", "--seed=1",
        f"--flagfile={config.shipped_config('fast')}", "--", "--config=x"]
    assert argv[2] == "--config=default"  # The caller's list is left alone.


def test_the_shipped_configs_are_package_data_linked_from_the_repository_root():
    names = config.shipped_configs()
    assert {"default", "fast", "best"} <= set(names)
    assert Path(config.CONFIGS_DIR) == REPO / "mnist_tf" / "configs"
    # configs/ at the root is the same directory, for --flagfile=configs/NAME.cfg.
    assert (REPO / "configs").resolve() == Path(config.CONFIGS_DIR)
    # pyproject ships them with the package (a non-editable install has no configs/).
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["mnist_tf"]
    assert {"configs/*.cfg", "inference/draw.html"} <= set(package_data)  # serve's page too.
    with pytest.raises(UserError, match="no shipped config 'nope'"):
        config.shipped_config("nope")
