"""The code's shape: the layout shows the data flow, and every function fits on a screen."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mnist_tf"
MAX_FUNCTION_LINES = 80


def code_lines(node: ast.AST, source_lines: list[str]) -> int:
    """Lines of a function that hold code: docstring, blank and comment-only lines excluded."""
    body = node.body
    docstring = (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                 and isinstance(body[0].value.value, str))
    skip = set(range(body[0].lineno, body[0].end_lineno + 1)) if docstring else set()
    count = 0
    for number in range(node.lineno, node.end_lineno + 1):
        text = source_lines[number - 1].strip()
        if number not in skip and text and not text.startswith("#"):
            count += 1
    return count


def functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path.relative_to(PACKAGE.parent)}:{node.name}", code_lines(node, lines)


def test_every_function_fits_on_a_screen():
    sizes = dict(functions())
    assert len(sizes) > 100  # The walk found the package's functions.
    too_long = {name: n for name, n in sizes.items() if n > MAX_FUNCTION_LINES}
    assert not too_long, too_long


def test_the_line_counter_counts_code_only():
    source = 'def f():\n    """Doc.\n\n    More.\n    """\n    # why\n    x = 1\n\n    return x\n'
    node = ast.parse(source).body[0]
    assert code_lines(node, source.splitlines()) == 3  # def, x = 1, return.


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("package, forbidden", [
    # The model and its maths sit below the data and the training loop.
    ("model", ("mnist_tf.data", "mnist_tf.training", "mnist_tf.config")),
    # The data pipeline knows nothing of models or training.
    ("data", ("mnist_tf.model", "mnist_tf.training")),
])
def test_layers_import_only_downwards(package, forbidden):
    for path in (PACKAGE / package).glob("*.py"):
        bad = {name for name in imports_of(path) if name.startswith(forbidden)}
        assert not bad, (path.name, bad)


def test_shapes_and_normalisation_are_written_once():
    # 784 (28*28) and the /255 normalisation live in constants.py alone; a
    # number in a message or docstring is text, not a second definition.
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "constants.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            pixels = isinstance(node, ast.Constant) and node.value == 784
            normalises = (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
                          and isinstance(node.right, ast.Constant) and node.right.value == 255)
            if pixels or normalises:
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, offenders
