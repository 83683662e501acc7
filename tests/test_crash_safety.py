"""A crash mid-write never leaves a half-written output.

Each case runs a real command line tool in a subprocess in which the final
rename of one output file is replaced by: cut the new file's temporary copy to
half its size (the state of a write in progress), then SIGKILL the process.
The output must then be either absent or the previous complete file, and every
other file that existed must be byte-for-byte unchanged. A tool that wrote its
output in place, not through `files.atomic_path`, fails here: it is not killed
and the file changes.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import REPO

from mnist_tf import evaluate
from mnist_tf.config import TrainConfig
from mnist_tf.training import trainer

CHILD = r"""
import os, runpy, signal, sys
from mnist_tf import files

target, module, flags = sys.argv[1], sys.argv[2], sys.argv[3:]
real_replace = os.replace


class CrashOnRename:
    # The os module, except that renaming onto `target` dies half-way through.
    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def replace(src, dst):
        if os.path.basename(dst) == target:
            with open(src, "r+b") as f:
                f.truncate(os.path.getsize(src) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)


files.os = CrashOnRename()
sys.argv = [module, *flags]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, small_data_dir):
    """A finished small run: checkpoints, config.json, results.json, summaries."""
    workdir = tmp_path_factory.mktemp("run")
    # Without XLA (compiling would be most of the fixture's time); --jit_compile
    # may change on resume, so the re-run's default flags still match its config.json.
    config = TrainConfig(hidden_sizes=(16,), batch_size=64, train_steps=20, validation_size=0,
                         log_every_steps=10, checkpoint_every_steps=10, eval_batch_size=100,
                         histogram_every_steps=0, jit_compile=False)
    trainer.train_and_evaluate(config, str(workdir), data_dir=small_data_dir,
                               allow_download=False, log=lambda line: None)
    return workdir


def snapshot(directory):
    """Every regular file's bytes, by relative path.

    TensorBoard event files (each run adds one) and the lock file (it holds the
    pid of the run that last trained) are left out.
    """
    found = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            if "tfevents" not in name and name != "train.lock":
                with open(path, "rb") as f:
                    found[os.path.relpath(path, directory)] = f.read()
    return found


def crash_writing(target, module, *flags):
    result = subprocess.run([sys.executable, "-c", CHILD, target, module, *flags], cwd=REPO,
                            capture_output=True, text=True, timeout=240)
    # Killed at the rename: proof the tool writes `target` through a temporary file.
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr[-2000:])


@pytest.mark.parametrize("target, module, extra", [
    # A finished run started again evaluates and writes reevaluation.json
    # (its results.json is the run's record and is not rewritten).
    ("reevaluation.json", "mnist_tf.train", ["--nodownload", "--hidden_sizes=16", "--batch_size=64",
                                        "--train_steps=20", "--validation_size=0",
                                        "--eval_batch_size=100", "--log_every_steps=10",
                                        "--checkpoint_every_steps=10",
                                        "--histogram_every_steps=0"]),
    ("eval.json", "mnist_tf.evaluate", ["--nodownload"]),
    ("confusion_matrix_test.png", "mnist_tf.evaluate", ["--nodownload"]),
    ("curves.png", "mnist_tf.plot", ["--nodownload"]),
])
def test_a_crash_mid_write_leaves_the_old_file_or_none(workdir, small_data_dir, target, module,
                                                       extra):
    before = snapshot(workdir)
    flags = [f"--workdir={workdir}", f"--data_dir={small_data_dir}", *extra]
    crash_writing(target, module, *flags)
    after = snapshot(workdir)
    for name, content in before.items():
        assert after[name] == content, f"{name} changed"
    if target in before:
        assert after[target] == before[target]
    else:
        assert target not in after
    # What a crash can leave is the hidden temporary file beside `target`.
    hidden = [name for name in after if name not in before and name.startswith(".")]
    assert len(hidden) == 1 and hidden[0].startswith(f".{target}."), hidden

    if target == "eval.json":
        # Evaluating again writes the complete file over the debris: through the
        # function the command runs, in this process (no second TensorFlow start-up).
        evaluate.evaluate_checkpoint(str(workdir), data_dir=small_data_dir,
                                     allow_download=False, log=lambda line: None)
        assert json.loads((workdir / "eval.json").read_text())["num_examples"] == 200

