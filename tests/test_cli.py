"""`python -m mnist_tf.train` as a user runs it: flags, flagfiles, errors, resuming."""

import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from conftest import assert_usage_error, run_module

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.cfg"))
ENTRY_POINTS = ("train", "evaluate", "predict", "export", "plot", "serve")


def train(*args, cwd=REPO, timeout=240):
    return run_module("mnist_tf.train", *args, cwd=cwd, timeout=timeout)


@cache
def help_pages() -> dict[str, dict]:
    """Per entry point: the flags its define_*_flags defines, its SHORT_HELP, and the
    --helpshort and --help pages as `cli.print_help` writes them (one subprocess for all)."""
    code = (
        "import contextlib, importlib, io, json\n"
        "from absl import flags\n"
        "from mnist_tf import cli\n"
        "pages = {}\n"
        f"for name in {ENTRY_POINTS!r}:\n"
        "    module = importlib.import_module('mnist_tf.' + name)\n"
        "    before = set(flags.FLAGS)\n"
        "    getattr(module, f'define_{name}_flags')()\n"
        "    defined = sorted(set(flags.FLAGS) - before)\n"
        "    pages[name] = {'defined': defined, 'short': list(module.SHORT_HELP)}\n"
        "    for page, short in (('helpshort', True), ('help', False)):\n"
        "        with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "            cli.print_help(module, short)\n"
        "        pages[name][page] = out.getvalue()\n"
        "    for flag in defined:\n"
        "        delattr(flags.FLAGS, flag)  # The next entry point defines its own.\n"
        "print(json.dumps(pages))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def defined_flags() -> dict[str, set[str]]:
    """Every flag each entry point's define_*_flags defines, by entry point."""
    return {name: set(pages["defined"]) for name, pages in help_pages().items()}


def listed_flags(page: str) -> list[str]:
    """The flags a help page lists, in its order."""
    return re.findall(r"^  --(?:\[no\])?(\w+):", page, flags=re.M)


TRAIN_FIRST_FLAGS = {"workdir", "config", "hidden_sizes", "epochs", "train_steps", "batch_size",
                     "learning_rate", "dropout", "seed", "data_dir"}
IMPORTED = re.compile(r"^import time:.*\|\s+(tensorflow|matplotlib)(\.|$)", flags=re.M)


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_helpshort_lists_the_flags_people_change_first_without_tensorflow(entry_point):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", f"mnist_tf.{entry_point}", "--helpshort"],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    pages = help_pages()[entry_point]
    assert result.stdout == pages["helpshort"]  # So the in-process pages are the real ones.
    assert listed_flags(result.stdout) == pages["short"]
    assert f"python -m mnist_tf.{entry_point} --help" in result.stdout
    # Help comes at once: neither TensorFlow nor matplotlib is loaded for it.
    assert not IMPORTED.findall(result.stderr)


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_help_lists_every_flag_the_short_ones_first(entry_point):
    pages = help_pages()[entry_point]
    short, defined = pages["short"], set(pages["defined"])
    assert short[0] == "workdir" and set(short) <= defined
    if entry_point == "train":
        assert TRAIN_FIRST_FLAGS <= set(short) and len(short) <= 15
    if entry_point in ("train", "evaluate"):  # Defined for them by cli.define_data_flags.
        assert {"data_dir", "manual_dir", "download"} <= defined
    listed = listed_flags(pages["help"])
    assert listed[:len(short)] == short
    assert sorted(listed) == sorted(defined)  # Each flag once.


def test_help_exits_0():
    result = train("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout == help_pages()["train"]["help"]


def test_help_arguments():
    from mnist_tf import cli

    for argument in ("--help", "-help", "-h", "-?", "--helpfull", "-helpfull"):
        assert cli._take_help_flags(["train", argument, "--epochs=2"]) == (
            ["train", "--epochs=2"], "full")
    for argument in ("--helpshort", "-helpshort"):
        assert cli._take_help_flags(["train", argument]) == (["train"], "short")
    # After "--", arguments are the program's, as absl reads them.
    assert cli._take_help_flags(["train", "--", "--help"]) == (["train", "--", "--help"], None)


def test_short_help_refuses_an_undefined_flag():
    from mnist_tf import cli

    with pytest.raises(ValueError, match="no_such_flag"):
        cli.define_short_help(("no_such_flag",))


def test_the_evaluable_splits_are_declared_once():
    from mnist_tf.choices import SPLITS

    declared = [path.relative_to(REPO).as_posix() for path in (REPO / "mnist_tf").rglob("*.py")
                if re.search(r"^SPLITS\s*=", path.read_text(), flags=re.M)]
    assert declared == ["mnist_tf/choices.py"]
    assert f"--split: <{'|'.join(SPLITS)}>:" in help_pages()["evaluate"]["help"]


def test_python_m_mnist_tf_lists_the_commands():
    result = run_module("mnist_tf")
    assert result.returncode == 0, result.stderr
    for entry_point in ENTRY_POINTS:
        assert f"python -m mnist_tf.{entry_point} " in result.stdout


# More bad inputs, across every entry point, in tests/test_bad_inputs.py.
@pytest.mark.parametrize(
    "flag, fragments",
    [
        ("--hidden_sizes=512,0", ["--hidden_sizes"]),
        ("--batch_size=many", ["batch_size"]),
        ("--epochs=-1", ["--epochs"]),
        ("--learning_rate=0", ["--learning_rate"]),
        ("--lr_schedule=step", ["--lr_schedule", "'step'", "constant, cosine"]),
        ("--validation_size=-10", ["--validation_size"]),
        ("--augment_scale=1.5", ["--augment_scale", "[0, 1)"]),
        ("--stop_at_test_accuracy=98", ["--stop_at_test_accuracy", "0.98"]),
        ("--no_such_flag=1", ["no_such_flag"]),
    ],
)
def test_bad_flags_exit_2_with_one_line(flag, fragments, tmp_path):
    result = train(flag, f"--workdir={tmp_path / 'w'}")
    assert_usage_error(result, *fragments)
    assert not (tmp_path / "w").exists()


def test_device_under_a_distribution_is_refused_before_tensorflow_loads(tmp_path):
    result = train("--distribution=mirrored", "--device=cpu", f"--workdir={tmp_path / 'w'}")
    assert_usage_error(result, "--device: cpu cannot be combined with --distribution=mirrored",
                       "drop --device")
    assert not (tmp_path / "w").exists()


def test_unusable_workdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    assert_usage_error(train(f"--workdir={blocker}"), "--workdir", "is a file")
    assert_usage_error(train(f"--workdir={blocker / 'sub'}"), "--workdir", "cannot create")
    assert blocker.read_text() == "keep me"


def test_stray_positional_argument(tmp_path):
    assert_usage_error(train("oops", f"--workdir={tmp_path}"), "unexpected arguments")


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_parses(config):
    # --helpshort exits after parsing the flagfile; a bad line would fail first.
    from absl import flags

    from mnist_tf import train as train_module
    from mnist_tf.config import TrainConfig

    if "hidden_sizes" not in flags.FLAGS:
        train_module.define_train_flags()
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["mnist_tf.train", f"--flagfile={config}"])
    try:
        assert isinstance(train_module.config_from_flags(), TrainConfig)
        assert flags.FLAGS.workdir.startswith("runs/")
    finally:
        flags.FLAGS.unparse_flags()


def test_train_then_resume_from_the_command_line(tmp_path, small_data_dir):
    workdir = tmp_path / "run"
    common = [f"--flagfile={REPO / 'configs' / 'default.cfg'}", f"--workdir={workdir}",
              f"--data_dir={small_data_dir}", "--nodownload", "--hidden_sizes=32",
              "--batch_size=50", "--validation_size=100", "--log_every_steps=4",
              "--nojit_compile",  # XLA compile time is not what this test is about.
              # default.cfg's cosine decay fixes a run's length once it has started
              # (tests/test_workdir.py); a constant rate lets the resume go further.
              "--lr_schedule=constant"]
    first = train(*common, "--train_steps=12", "--plot")
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert "Data: prepared TFDS mnist/3.0.1 found in" in out
    assert "step 4/12 | epoch 0.40 | loss" in out
    assert "Done: step 12" in out
    assert (workdir / "curves.png").exists() and (workdir / "predictions.png").exists()
    # TensorFlow's C++ start-up noise is suppressed.
    assert "cuInit" not in first.stderr and "oneDNN" not in first.stderr
    results = json.loads((workdir / "results.json").read_text())
    assert results["global_step"] == 12 and results["data_source"] == "prepared"
    assert results["flags"]["hidden_sizes"] == [32]

    second = train(*common, "--train_steps=20")
    assert second.returncode == 0, second.stderr
    assert "Resuming from" in second.stdout and "at step 12" in second.stdout
    assert json.loads((workdir / "results.json").read_text())["global_step"] == 20
    # (Resuming with a setting that must match is refused: tests/test_workdir.py.)


def test_entry_points_import_tensorflow_without_keras_or_jax(tmp_path):
    # A stand-in `jax` that records being imported: TensorFlow's tf.lite imports
    # `jax` whenever one is installed, which the entry points skip (0.4 s).
    fake = tmp_path / "jax"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\nopen(os.environ['JAX_IMPORTED'], 'w').close()\njit = None\n")
    marker = tmp_path / "imported"
    code = (
        "import sys\n"
        "from mnist_tf import cli\n"
        "tf = cli.import_tensorflow_quietly()\n"
        "print(sorted(name for name in ('keras', 'matplotlib', 'jax') if name in sys.modules))\n"
        "import jax\n"
        "print(jax.__file__)\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}",
           "JAX_IMPORTED": str(marker)}
    env.pop("TF_USE_LEGACY_KERAS", None)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded, jax_file = result.stdout.splitlines()[-2:]
    assert loaded == "[]"
    # After TensorFlow's import, `import jax` works as usual.
    assert jax_file == str(fake / "__init__.py") and marker.exists()
