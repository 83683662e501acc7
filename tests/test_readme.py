"""The documentation matches the code: README.md, every docs/ page, benchmarks/README.md.

Checked: the code map, commands, flags, configs, results.json keys, the contents
list, links between pages and to anchors, example errors, and the README's size.
Each check is a function from a page's text to the problems it finds, so the
tests can show it on the real page (no problems) and on a doctored one (the
problem is found). The flag table (docs/training.md) is checked in
tests/test_config.py, the "From Python" snippet (docs/python.md) in tests/test_api.py.
"""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mnist_tf"
README = (REPO / "README.md").read_text()
DOCS = REPO / "docs"
PAGES = {path: path.read_text() for path in
         [REPO / "README.md", *sorted(DOCS.glob("*.md")), REPO / "benchmarks" / "README.md"]}
ALL = "\n".join(PAGES.values())  # Every page, for checks of what is named anywhere.
TRAINING = (DOCS / "training.md").read_text()
TOOLS = (DOCS / "tools.md").read_text()


def without_code_blocks(text: str) -> str:
    """The text with its fenced code blocks blanked out (a `## ` inside one is no heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def section(text: str, heading: str) -> str:
    """The body of the `## heading` section, up to the next `## ` heading."""
    start = text.index(f"\n## {heading}\n") + len(heading) + 5
    end = text.find("\n## ", start)
    return text[start:] if end < 0 else text[start:end]


def first_column(table_text: str) -> list[str]:
    """The backticked names in the first cell of each table row, in order."""
    names = []
    for line in table_text.splitlines():
        match = re.match(r"\| (`[^|]*`) \|", line)
        if match:
            names += re.findall(r"`([^`]+)`", match.group(1))
    return names


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# ----------------------------------------------------------------------------
# (a) The code map lists every module under mnist_tf/, by path, and no other.


def modules() -> set[str]:
    return {path.relative_to(REPO).as_posix() for path in PACKAGE.rglob("*.py")}


def code_map_problems(text: str) -> list[str]:
    listed = first_column(section(text, "Code map"))
    problems = [f"listed twice: {name}" for name in sorted(set(listed))
                if listed.count(name) > 1]
    problems += [f"not in the code map: {name}" for name in sorted(modules() - set(listed))]
    problems += [f"no such module: {name}" for name in sorted(set(listed) - modules())]
    return problems


def test_code_map_lists_every_module_and_no_other():
    assert len(modules()) > 30  # The walk found the package.
    assert code_map_problems(README) == []


def test_code_map_check_finds_a_missing_and_an_unknown_module():
    doctored = README.replace("| `mnist_tf/training/runners.py` |", "| `mnist_tf/runners.py` |")
    assert doctored != README
    assert code_map_problems(doctored) == ["not in the code map: mnist_tf/training/runners.py",
                                           "no such module: mnist_tf/runners.py"]


# ----------------------------------------------------------------------------
# (b) Every `python -m mnist_tf.X` is a real module with a `main`.


def has_main(module: str) -> bool:
    path = REPO.joinpath(*module.split("."))
    path = path / "__main__.py" if path.is_dir() else path.with_suffix(".py")
    if not path.is_file():
        return False
    tree = ast.parse(path.read_text())
    return any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body)


def command_problems(text: str) -> list[str]:
    commands = set(re.findall(r"python -m (mnist_tf(?:\.\w+)+)", text))
    return [f"python -m {name}: no such module with a main()" for name in sorted(commands)
            if not has_main(name)]


def test_every_python_m_command_is_a_module_with_a_main():
    commands = set(re.findall(r"python -m (mnist_tf(?:\.\w+)+)", ALL))
    assert {"mnist_tf.train", "mnist_tf.evaluate", "mnist_tf.predict", "mnist_tf.export",
            "mnist_tf.plot"} <= commands
    assert command_problems(ALL) == []


def test_command_check_finds_a_module_without_main():
    assert has_main("mnist_tf.train") and not has_main("mnist_tf.config")
    doctored = README + "\n`python -m mnist_tf.config` and `python -m mnist_tf.nosuch`\n"
    assert command_problems(doctored) == ["python -m mnist_tf.config: no such module with a main()",
                                          "python -m mnist_tf.nosuch: no such module with a main()"]


# ----------------------------------------------------------------------------
# (c) Every config mentioned exists, and every config in configs/ is mentioned.


def config_problems(text: str) -> list[str]:
    # `configs/NAME.cfg`, or NAME.cfg alone (as in the Configs table); the
    # repository's own setup.cfg is no training config.
    mentioned = {name for name in re.findall(r"([\w-]+\.cfg)\b", text)
                 if not (REPO / name).is_file() and not name[:-4].isupper()}  # NAME.cfg: any.
    present = {path.name for path in (REPO / "configs").glob("*.cfg")}
    return ([f"mentioned but not in configs/: {name}" for name in sorted(mentioned - present)]
            + [f"configs/{name} is not mentioned" for name in sorted(present - mentioned)])


def test_configs_mentioned_are_the_configs_that_exist():
    assert len(list((REPO / "configs").glob("*.cfg"))) >= 3
    assert config_problems(ALL) == []
    configs_table = first_column(next(  # The first table after the heading.
        block for block in TRAINING.split("\n### Configs\n", 1)[1].split("\n\n")
        if block.startswith("| ")))
    assert set(configs_table) == {path.name for path in (REPO / "configs").glob("*.cfg")}


def test_config_check_finds_a_missing_and_an_unmentioned_config():
    doctored = ALL.replace("seed_004.cfg", "seed_005.cfg")
    assert config_problems(doctored) == ["mentioned but not in configs/: seed_005.cfg",
                                         "configs/seed_004.cfg is not mentioned"]


# ----------------------------------------------------------------------------
# (d) The results.json table holds exactly the keys training.results.collect writes.


def results_keys() -> list[str]:
    """The keys of the dict literal `mnist_tf/training/results.py:collect` returns."""
    tree = ast.parse((PACKAGE / "training" / "results.py").read_text())
    function = next(node for node in tree.body
                    if isinstance(node, ast.FunctionDef) and node.name == "collect")
    returned = [node.value for node in ast.walk(function) if isinstance(node, ast.Return)]
    assert len(returned) == 1 and isinstance(returned[0], ast.Dict)
    return [key.value for key in returned[0].keys]


def results_table_problems(text: str) -> list[str]:
    body = section(text, "What a run writes").split("\n### results.json\n", 1)[1]
    listed = first_column(body)
    problems = [f"listed twice: {key}" for key in sorted(set(listed)) if listed.count(key) > 1]
    problems += [f"not in the docs' table: {key}"
                 for key in results_keys() if key not in listed]
    problems += [f"not in results.json: {key}" for key in listed if key not in results_keys()]
    return problems


def test_results_table_matches_the_results_dict():
    assert "test_accuracy" in results_keys() and "flags" in results_keys()
    assert results_table_problems(TRAINING) == []


def test_results_table_check_finds_a_missing_and_an_unknown_key():
    doctored = TRAINING.replace("| `num_parameters` |", "| `num_params` |")
    assert results_table_problems(doctored) == ["not in the docs' table: num_parameters",
                                                 "not in results.json: num_params"]


# ----------------------------------------------------------------------------
# (e) The README's documentation list links every docs/ page, and each page's title.
# (f) Every relative link, on every page, reaches a file, and its #anchor a heading.


def headings(text: str, level: str = "##") -> list[str]:
    return re.findall(rf"^{level} (.+)$", without_code_blocks(text), flags=re.M)


def contents_problems(text: str) -> list[str]:
    contents = text.split("\n## Documentation\n", 1)[1].split("\n## ", 1)[0]
    entries = re.findall(r"^- \[(.+?)\]\((docs/[\w-]+\.md)\)", contents, flags=re.M)
    pages = sorted(path.relative_to(REPO).as_posix() for path in DOCS.glob("*.md"))
    listed = [page for _, page in entries]
    problems = [f"page not in the contents: {page}" for page in pages if page not in listed]
    problems += [f"no such page: {page}" for page in listed if page not in pages]
    for title, page in entries:
        if page in pages and headings((REPO / page).read_text(), "#") != [title]:
            problems.append(f"{page}: its title is not {title!r}")
    return problems


def link_problems(path: Path, text: str) -> list[str]:
    """Relative links of one page whose file or #anchor does not exist."""
    problems = []
    for link in sorted(set(re.findall(r"\]\(([^)\s]+)\)", without_code_blocks(text)))):
        if re.match(r"\w+:", link):  # http:, https:, mailto: are not checked.
            continue
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists():
            problems.append(f"{path.name}: no file for {link}")
        elif anchor and file.suffix == ".md" and anchor not in {
                slug(h) for h in headings(file.read_text(), "#{1,6}")}:
            problems.append(f"{path.name}: no heading for {link}")
    return problems


def test_the_readme_lists_every_docs_page():
    assert len(list(DOCS.glob("*.md"))) >= 9
    assert contents_problems(README) == []


def test_contents_check_finds_a_missing_page_and_a_wrong_title():
    doctored = README.replace("- [Speed](docs/speed.md)", "- [Sped](docs/speed.md)")
    assert contents_problems(doctored) == ["docs/speed.md: its title is not 'Sped'"]
    doctored = README.replace("- [Data](docs/data.md)", "- [Data](docs/dat.md)")
    assert contents_problems(doctored) == ["page not in the contents: docs/data.md",
                                           "no such page: docs/dat.md"]


def test_every_link_on_every_page_resolves():
    assert slug("Devices, precision and distribution") == "devices-precision-and-distribution"
    problems = []
    for path, text in PAGES.items():
        problems += link_problems(path, text)
    assert problems == []
    readme = REPO / "README.md"
    assert link_problems(readme, "See [nowhere](#nowhere), [x](docs/x.md), "
                         "[d](docs/data.md#nope), [ok](docs/data.md#data).") == [
        "README.md: no heading for #nowhere", "README.md: no heading for docs/data.md#nope",
        "README.md: no file for docs/x.md"]


def test_the_readme_is_short():
    assert len(README.encode()) <= 15_000


# ----------------------------------------------------------------------------
# (g) The Training section's flag tables list exactly the flags of
#     `python -m mnist_tf.train`; each tool's section names every flag it has;
#     every `--flag` a page gives a command is a flag of that command.

TOOL_SECTIONS = {"train": "Training", "evaluate": "Evaluate", "predict": "Predict",
                 "export": "Export", "plot": "Plot", "serve": "Usage"}
TOOL_PAGES = {"train": TRAINING, "evaluate": TOOLS, "predict": TOOLS, "export": TOOLS,
              "plot": TOOLS, "serve": (DOCS / "serve.md").read_text()}
ABSL_FLAGS = {"flagfile", "help", "helpshort", "helpfull", "helpxml", "undefok"}


def flag_names(names: list[str], defined: set[str]) -> set[str]:
    """`--name`, `--[no]name` and `--noname` spellings, as flag names."""
    found = set()
    for name in names:
        name = name.split("=")[0].removeprefix("--").removeprefix("[no]")
        if name not in defined and name.startswith("no") and name[2:] in defined:
            name = name[2:]
        found.add(name)
    return found


def flag_doc_problems(text: str, entry_point: str, defined: set[str]) -> list[str]:
    body = section(text, TOOL_SECTIONS[entry_point])
    if entry_point == "train":  # Its tables: the first cells that are flags.
        listed = flag_names([name for name in first_column(body) if name.startswith("--")],
                            defined)
        return ([f"train: --{name} is not in the flag tables" for name in sorted(defined - listed)]
                + [f"train: the tables list --{name}, which is no flag"
                   for name in sorted(listed - defined)])
    mentioned = flag_names(re.findall(r"--(?:\[no\])?\w+", body), defined)
    return [f"{entry_point}: --{name} is not mentioned in the {TOOL_SECTIONS[entry_point]} "
            "section" for name in sorted(defined - mentioned)]


def command_flag_problems(text: str, defined: dict[str, set[str]]) -> list[str]:
    """`--flag`s given to `python -m mnist_tf.X` on one line that X does not define."""
    problems = []
    for entry_point, rest in re.findall(r"python -m mnist_tf\.(\w+)([^`\n]*)", text):
        if entry_point not in defined:
            continue
        for name in flag_names(re.findall(r"(?<![\w-])--\w+", rest), defined[entry_point]):
            if name not in defined[entry_point] | ABSL_FLAGS:
                problems.append(f"{entry_point}: --{name} is no flag")
    return sorted(set(problems))


def test_the_docs_document_every_flag_of_every_entry_point():
    from test_cli import defined_flags

    problems = []
    for entry_point, defined in defined_flags().items():
        problems += flag_doc_problems(TOOL_PAGES[entry_point], entry_point, defined)
    assert problems == []


def test_every_flag_in_a_command_is_a_flag_of_that_command():
    from test_cli import defined_flags

    defined = defined_flags()
    assert command_flag_problems(ALL, defined) == []
    assert command_flag_problems("python -m mnist_tf.plot --workdir=a --epochz=3 --helpshort",
                                 defined) == ["plot: --epochz is no flag"]


def test_the_flag_check_finds_a_missing_and_an_unknown_flag():
    from test_cli import defined_flags

    train = defined_flags()["train"]
    doctored = TRAINING.replace("| `--manual_dir` |", "| `--manual_directory` |")
    assert flag_doc_problems(doctored, "train", train) == [
        "train: --manual_dir is not in the flag tables",
        "train: the tables list --manual_directory, which is no flag"]
    assert flag_doc_problems(TOOLS, "export", {"workdir", "export_dir", "shiny"}) == [
        "export: --shiny is not mentioned in the Export section"]


# ----------------------------------------------------------------------------
# (h) The pages' example errors are what the commands print.

EXAMPLE_DIR = "/tmp/elsewhere"  # Where the pages say their example commands ran.


def example_errors(text: str) -> list[tuple[str, str]]:
    """(command, error line) for each `$ python -m mnist_tf...` followed by `error: ...`."""
    lines = text.splitlines()
    return [(line[2:], after) for line, after in zip(lines, lines[1:])
            if line.startswith("$ python -m mnist_tf.") and after.startswith("error: ")]


def inline_errors(text: str) -> list[str]:
    """The `error: ...` spans quoted in the prose, whitespace made single spaces."""
    spans = re.findall(r"`(error: [^`]+)`", without_code_blocks(text))
    return [" ".join(span.split()) for span in spans]


DIVERGENCE_EXAMPLE = (
    "error: the training loss or its gradients are not finite at step 14 (the run diverged: "
    "train afresh in another --workdir with a lower --learning_rate (now 0.001), or resume with "
    "--nan_policy=skip_step to skip such steps); nothing was saved after it, the last good "
    "checkpoint runs/x/checkpoints/ckpt-10 is kept")
MATPLOTLIB_EXAMPLE = ('error: plotting needs matplotlib, which is not installed; install it '
                      'with: pip install -e ".[plot]"')
# The two quoted errors no command can show quickly, printed by the code that makes
# them: a call that began after step 13 and whose first step had a non-finite loss,
# and plot's import of matplotlib where `import matplotlib` fails.
PRINT_OTHER_ERRORS = """
import sys
from types import SimpleNamespace
from mnist_tf import plot
from mnist_tf.errors import UserError
from mnist_tf.training import trainer
output = SimpleNamespace(diverged_at=0)
config = SimpleNamespace(learning_rate=1e-3, weight_decay=0.0)
sys.modules["matplotlib"] = sys.modules["matplotlib.pyplot"] = None
for check in (lambda: trainer._check_diverged(output, 13, config,
                                              "runs/x/checkpoints/ckpt-10"),
              plot.import_pyplot):
    try:
        check()
    except UserError as e:
        print(f"error: {e}")
"""
# Prose that shows an error's form, not an example of one.
ERROR_FORMS = ("error: FILE: problem",)


def run_examples(examples, tmp_path):
    """Runs the commands at once, each in its own empty directory, and PRINT_OTHER_ERRORS.

    Returns:
        (each command's stderr, the other errors' lines).
    """
    import os
    import shlex
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("MNIST_TF_VERBOSE", "TF_CONFIG")}
    env["TFDS_DATA_DIR"] = str(tmp_path / "no_data")  # Nothing may need the data.
    processes = []
    for number, (command, _) in enumerate(examples):
        cwd = tmp_path / f"example_{number}" / "elsewhere"
        cwd.mkdir(parents=True)
        args = shlex.split(command)
        assert args[:2] == ["python", "-m"], command
        processes.append((cwd, subprocess.Popen(
            [sys.executable, *args[1:]], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)))
    others = subprocess.Popen([sys.executable, "-c", PRINT_OTHER_ERRORS], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    printed = []
    for cwd, process in processes:
        _, err = process.communicate(timeout=180)
        assert process.returncode == 2, err
        printed.append(err.strip().replace(str(cwd), EXAMPLE_DIR))
    out, err = others.communicate(timeout=180)
    assert others.returncode == 0, err
    return printed, out.splitlines()


def test_the_example_errors_are_what_the_commands_print(tmp_path):
    import shutil

    examples = example_errors(ALL)
    assert len(examples) >= 5
    if shutil.which("nvidia-smi"):  # The gpu:1 example is of a machine without a GPU.
        examples = [(c, e) for c, e in examples if "--device=gpu" not in c]
    printed, others = run_examples(examples, tmp_path)
    assert printed == [error for _, error in examples]
    assert others == [DIVERGENCE_EXAMPLE, MATPLOTLIB_EXAMPLE]


def test_every_quoted_error_is_an_example_or_checked():
    quoted = inline_errors(ALL)
    assert DIVERGENCE_EXAMPLE in quoted and MATPLOTLIB_EXAMPLE in quoted
    checked = {error for _, error in example_errors(ALL)}
    checked |= {DIVERGENCE_EXAMPLE, MATPLOTLIB_EXAMPLE, *ERROR_FORMS}
    assert len(quoted) >= 4
    assert [span for span in quoted if span not in checked] == []
    assert example_errors("$ python -m mnist_tf.x --a\nerror: b\n$ python -m y\nerror: c\n") == [
        ("python -m mnist_tf.x --a", "error: b")]


# ----------------------------------------------------------------------------
# (i) The workdir layout is described once, in mnist_tf/workdir.py, and is complete.


def test_the_workdir_docstring_lists_every_file_a_run_and_the_tools_write():
    import mnist_tf.workdir as workdir

    doc = workdir.__doc__
    for name in ("config.json", "results.json", "reevaluation.json", "train.lock",
                 "checkpoints/", "train/, validation/, test/", "eval.json",
                 "eval_validation.json", "confusion_matrix_test.png", "eval/", "curves.png",
                 "predictions.png"):
        assert name in doc, name
    for value in (workdir.CONFIG_FILE, workdir.RESULTS_FILE):
        assert value in doc
    assert "workdir.py" in TRAINING  # The docs link to it rather than repeat it.
