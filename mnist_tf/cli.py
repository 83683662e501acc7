"""Shared plumbing for the command-line entry points: quiet logs, one-line errors."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import tempfile
import textwrap

from absl import app, flags

from mnist_tf import disk
from mnist_tf.choices import BEST, LATEST
from mnist_tf.errors import UserError

# TensorFlow's C++ logging (oneDNN, CUDA probing) is noise for users; must be
# set before TensorFlow is imported. MNIST_TF_VERBOSE=1 keeps it.
VERBOSE = bool(os.environ.get("MNIST_TF_VERBOSE"))
if not VERBOSE:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXIT_USAGE = 2
# C++ log lines TensorFlow prints at start-up. Messages logged before
# absl::InitializeLog() ignore TF_CPP_MIN_LOG_LEVEL (abseil-cpp#1718), so they
# are filtered here instead; anything else is passed through.
_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} |"
    r"E\d{4} .*(cuInit|cuda|CUDA))"
)


@contextlib.contextmanager
def _without_keras(keras: bool):
    """Has TensorFlow's import skip Keras, when this process will not use `tf.keras`.

    TensorFlow's import loads Keras 3 eagerly (to register its optimizers),
    and Keras loads matplotlib.pyplot: about 0.8 s of a 4 s import on a
    2-core CPU. With TF_USE_LEGACY_KERAS=1 it looks for tf_keras instead
    and, finding none, goes on without. The variable is set for the import
    only, so child processes see the caller's environment; where tf_keras
    is installed, or the caller set the variable, nothing changes. In this
    process `tf.keras` is then unavailable: the trainer and the tools never
    use it (the benchmarks' Keras references pass `keras=True`).
    """
    skip = (not keras and "tensorflow" not in sys.modules
            and "TF_USE_LEGACY_KERAS" not in os.environ
            and importlib.util.find_spec("tf_keras") is None)
    if skip:
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    try:
        yield
    finally:
        if skip:
            del os.environ["TF_USE_LEGACY_KERAS"]


@contextlib.contextmanager
def _without_jax():
    """Has TensorFlow's import skip JAX, which only `tf.lite`'s JAX converter uses.

    `tf.lite` imports `jax` at load time when it is installed (for
    `TFLiteConverter.experimental_from_jax`): 0.4 s of the import on a
    2-core CPU, paid by every command in an environment that also has JAX
    (the `bench` extra). A None entry in `sys.modules` makes that import
    raise the ImportError `tf.lite` expects; the entry is removed after, so
    `import jax` later in the process works as usual. Nothing changes where
    JAX or TensorFlow is already imported.
    """
    skip = "jax" not in sys.modules and "tensorflow" not in sys.modules
    if skip:
        sys.modules["jax"] = None
    try:
        yield
    finally:
        if skip and "jax" in sys.modules and sys.modules["jax"] is None:
            del sys.modules["jax"]


def import_tensorflow_quietly(setup=None, keras: bool = False):
    """Imports TensorFlow and initialises its devices without the C++ start-up noise.

    File descriptor 2 is captured while TensorFlow loads and probes for GPUs;
    lines that are not known noise are written back to stderr afterwards, so
    real errors stay visible.

    Args:
        setup: if given, called after the import and before TensorFlow's
            runtime starts (logical devices and collective ops can only be
            configured then); its UserError propagates.
        keras: whether this process uses `tf.keras`; if not, TensorFlow is
            imported without Keras (`_without_keras`). JAX is never imported
            with it (`_without_jax`).

    Returns:
        The `tensorflow` module.
    """
    if VERBOSE:
        with _without_keras(keras), _without_jax():
            import tensorflow as tf

        if setup is not None:
            setup()
        return tf
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            with _without_keras(keras), _without_jax():
                import tensorflow as tf

            if setup is not None:
                setup()
            tf.config.list_logical_devices()  # Device start-up logs here (cuInit).
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if not _STARTUP_NOISE.match(line):
                    print(line, file=sys.stderr)
    return tf


# The flags defined below (--data_dir, --manual_dir, --download) are key flags
# of the entry point that calls `define_data_flags`, not of this module:
# `--helpshort` lists the main module's key flags only, and would leave them out.
flags.disclaim_key_flags()


def forward_to(library: str):
    """A module `__getattr__` that answers with `library`'s names, imported on first use.

    An entry point is flags and one library call; callers that reach for the
    library's names through it (`mnist_tf.evaluate.evaluate_checkpoint`)
    get them from `library`, and TensorFlow loads only then.
    """

    def __getattr__(name: str):
        import importlib

        try:
            return getattr(importlib.import_module(library), name)
        except AttributeError:
            raise AttributeError(f"module {library!r} has no attribute {name!r}") from None

    return __getattr__


def define_checkpoint_flag(use: str) -> None:
    """Defines --checkpoint, the one way every tool names the checkpoint it reads.

    Args:
        use: what the tool does with it, for the help ("evaluate", "serve", ...).
    """
    flags.DEFINE_string(
        "checkpoint", LATEST,
        f"Checkpoint to {use}: {LATEST} (the newest rolling checkpoint), {BEST} (the one "
        "training kept with --keep_best, in WORKDIR/checkpoints/best/), or a checkpoint "
        "prefix such as WORKDIR/checkpoints/ckpt-4000.")


def define_data_flags() -> None:
    """Defines --data_dir, --manual_dir and --download (see mnist_tf.data.sources).

    Called only from entry points' define_*_flags functions; the flags are
    listed by that entry point's `--helpshort`.
    """
    flags.DEFINE_string("data_dir", None,
                        "TFDS data directory (default: $TFDS_DATA_DIR, else TFDS's default).")
    flags.DEFINE_string("manual_dir", None,
                        "Directory holding the four official MNIST IDX .gz files, used when "
                        "no prepared copy exists and TFDS cannot download.")
    flags.DEFINE_boolean("download", True,
                         "Allow TFDS's own download (tried only if its host answers a quick "
                         "probe).")


def fail(message: str) -> None:
    """Prints `error: message` on one line to stderr and exits with status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


@contextlib.contextmanager
def one_line_errors(interrupted: str = "interrupted"):
    """Ends the process on a `UserError` or Ctrl-C with one line and exit status 2.

    A `UserError` prints its message; Ctrl-C prints `interrupted`, which says
    what was kept (`fail`).
    """
    try:
        yield
    except UserError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail(interrupted)


def define_shipped_config_flag(help_text: str) -> None:
    """Defines `--config=NAME`, a shipped config by name, which `parse_flags` expands.

    Only entry points that call this get the expansion: a script whose own
    `--config` is a file path (the benchmarks') keeps its flag as it is.
    """
    global _SHIPPED_CONFIG_FLAG
    flags.DEFINE_string("config", None, help_text)
    _SHIPPED_CONFIG_FLAG = True


_SHIPPED_CONFIG_FLAG = False


_SHORT_HELP: tuple[str, ...] = ()
_HELP_ARGUMENTS = {"--help": "full", "-help": "full", "-h": "full", "-?": "full",
                   "--helpfull": "full", "-helpfull": "full",
                   "--helpshort": "short", "-helpshort": "short"}


def define_short_help(names: tuple[str, ...]) -> None:
    """Names the flags `--helpshort` lists, first in `--help`: the ones people change first.

    Called at the end of an entry point's define_*_flags, with a tuple declared
    beside its flag definitions. Without it, `--helpshort` lists every flag of
    the entry point.

    Raises:
        ValueError: for a name that is not a defined flag (a typo would
            otherwise leave the flag out of the help silently).
    """
    global _SHORT_HELP
    unknown = [name for name in names if name not in flags.FLAGS]
    if unknown:
        raise ValueError(f"define_short_help: no flag named {', '.join(unknown)}")
    _SHORT_HELP = tuple(names)


def _take_help_flags(argv: list[str]) -> tuple[list[str], str | None]:
    """Removes --help/--helpshort/-h from `argv`; returns (rest, "full", "short" or None)."""
    wanted, rest = None, []
    for index, argument in enumerate(argv):
        if argument == "--":
            rest.extend(argv[index:])
            break
        if index and argument in _HELP_ARGUMENTS:
            wanted = wanted or _HELP_ARGUMENTS[argument]
        else:
            rest.append(argument)
    return rest, wanted


def _flag_lines(flag) -> list[str]:
    """One flag as absl writes it: `  --name: help`, wrapped, then its default."""
    name = f"[no]{flag.name}" if flag.boolean else flag.name
    default = flag.default_as_str if flag.default is not None else "None"
    return (textwrap.wrap(f"--{name}: {flag.help}", 96, initial_indent="  ",
                          subsequent_indent="    ") + [f"    (default: {default})"])


def print_help(module, short: bool) -> None:
    """Prints an entry point's usage line and flags to stdout (exiting is the caller's).

    `--helpshort` lists the flags named by `define_short_help`; `--help` lists
    them first, then every other flag of the entry point, alphabetically.

    Args:
        module: the entry point's module (`sys.modules["__main__"]` when run);
            its docstring's first line heads the page, and its key flags (the
            ones it defined, `define_data_flags`' included) are listed.
        short: list only the flags people change first.
    """
    doc = (module.__doc__ or "").strip().splitlines()
    spec = getattr(module, "__spec__", None)
    command = f"python -m {spec.name}" if spec else f"python {sys.argv[0]}"
    print(doc[0] if doc else command)
    own = {f.name: f for f in flags.FLAGS.get_key_flags_for_module(module)}
    first = list(_SHORT_HELP) or sorted(own)
    print("\nThe flags people change first:" if _SHORT_HELP else "\nFlags:")
    for name in first:
        print("\n".join(_flag_lines(flags.FLAGS[name])))
    if short:
        print(f"\nEvery flag: {command} --help")
        return
    rest = sorted(set(own) - set(first))
    if rest:
        print("\nAll other flags:")
        for name in rest:
            print("\n".join(_flag_lines(own[name])))
    print("\nabsl's own flags (--flagfile, --undefok, ...): see absl.flags.")


def parse_flags(argv: list[str]) -> list[str]:
    """Parses flags with absl, reporting bad flags on one line with exit status 2.

    absl's default prints a multi-line message and exits 1; users get one line
    naming the flag instead. Before absl reads them, `--config=NAME` (where the
    entry point defines --config) becomes `--flagfile=` the shipped config's
    path, and a `--flagfile` that cannot be read is reported with the path
    tried and the fix.
    """
    argv, wanted = _take_help_flags(argv)
    try:
        if _SHIPPED_CONFIG_FLAG:
            argv = expand_config_flags(argv)
        check_flagfiles(argv, _SHIPPED_CONFIG_FLAG)
        if wanted:  # After the flagfiles, so an unreadable one is reported first.
            print_help(sys.modules["__main__"], short=wanted == "short")
            sys.stdout.flush()
            os._exit(0)
        return flags.FLAGS(argv)
    except flags.Error as e:
        # absl's own messages may start with "ERROR:: "; ours adds "error: ".
        fail(re.sub(r"^ERROR:+\s*", "", str(e).strip().splitlines()[0]))
    except UserError as e:
        fail(str(e))
    return []  # Unreachable; fail() exits.


def _flag_arguments(argv: list[str], name: str) -> list[tuple[int, int, str]]:
    """Where `--name=VALUE` or `--name VALUE` (or with one dash) appear in `argv[1:]`.

    Returns:
        (index of the flag, how many arguments it takes up, its value) for
        each; the scan stops at `--`, as absl's parsing does.
    """
    found, index = [], 1
    while index < len(argv) and argv[index] != "--":
        flag, equals, value = argv[index].partition("=")
        if flag in (f"--{name}", f"-{name}"):
            if equals:
                found.append((index, 1, value))
            elif index + 1 < len(argv):
                found.append((index, 2, argv[index + 1]))
                index += 1
        index += 1
    return found


def expand_config_flags(argv: list[str]) -> list[str]:
    """Replaces each `--config=NAME` in `argv` by `--flagfile=` that shipped config's path.

    In place, so flags after it override its values, as with --flagfile.

    Raises:
        UserError: for a NAME that is not a shipped config.
    """
    from mnist_tf import config

    argv = list(argv)
    for index, width, name in reversed(_flag_arguments(argv, "config")):
        argv[index:index + width] = [f"--flagfile={config.shipped_config(name)}"]
    return argv


def check_flagfiles(argv: list[str], has_config_flag: bool) -> None:
    """Checks that every `--flagfile` on the command line names a readable file.

    absl's own error has no hint ("ERROR:: Unable to open flagfile: [Errno 2]
    ..."), and a relative path is read from the current directory: the usual
    surprise when a command from the README is run elsewhere.

    Args:
        argv: the command line.
        has_config_flag: whether the entry point takes --config=NAME, to
            suggest it for a shipped config's file name.

    Raises:
        UserError: naming the path tried and the fix.
    """
    from mnist_tf import config, files

    for _, _, path in _flag_arguments(argv, "flagfile"):
        tried = os.path.abspath(os.path.expanduser(path))
        if os.path.isfile(tried) and os.access(tried, os.R_OK):
            continue
        problem = files.path_problem(tried, "file") or "is not readable"
        if not os.path.isabs(os.path.expanduser(path)):
            problem += " (a relative path is read from the current directory)"
        name = os.path.splitext(os.path.basename(path))[0]
        if has_config_flag and name in config.shipped_configs():
            fix = (f"run from the repository root, give the file's full path, or use "
                   f"--config={name} (the shipped config, from any directory)")
        else:
            fix = "give the file's full path, or its path from the current directory"
        raise UserError(f"--flagfile: {tried} {problem}; {fix}")


# Flags that choose where an entry point writes: the way out of a full disk.
_OUTPUT_FLAGS = ("workdir", "export_dir", "output_dir", "plot_dir")


def _output_flags_fix() -> str:
    """"free space or use another --workdir/..." naming the entry point's output flags."""
    defined = [f"--{name}" for name in _OUTPUT_FLAGS if name in flags.FLAGS]
    return "free space" + (f" or use another {'/'.join(defined)}" if defined else "")


def run(main) -> None:
    """Runs an entry point's `main` under absl (flags parsed by `parse_flags`), then exits.

    The exit skips the interpreter's own shutdown with `os._exit`: once
    TensorFlow is loaded, tearing down its thousands of modules and objects
    takes 1.2-1.5 s on 2 cores (measured: `import tensorflow` then exit) and
    does nothing a finished command needs. Every output the tools write is
    complete by then (written, fsync'ed or closed, renamed), summary writers
    are closed by the code that opened them, and the standard streams are
    flushed here. A full disk, wherever it struck, is the user's to fix: one
    line (`mnist_tf.disk`), exit status 2; the writers that can leave litter
    clean up where they write (`disk.writing`). Other exceptions (bugs) take
    the normal path, traceback included.
    """
    try:
        app.run(main, flags_parser=parse_flags)
        status = 0
    except SystemExit as e:
        status = e.code
    except Exception as e:
        if not disk.is_no_space(e):
            raise
        print(f"error: {disk.message(disk.path_in(e), _output_flags_fix())}", file=sys.stderr)
        status = EXIT_USAGE
    if status is None:
        status = 0
    elif not isinstance(status, int):  # sys.exit("message"): printed, status 1.
        print(status, file=sys.stderr)
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
