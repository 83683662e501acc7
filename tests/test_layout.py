"""The code's shape: the layout shows the data flow, and every function fits on a screen."""

import ast
from pathlib import Path

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


# Every module of the package, in layers from the top (entry points) to the
# bottom. A module may import its own layer and the layers below it, never one
# above: the command line depends on the library, never the reverse. A name
# covers its submodules (`mnist_tf.training` is every training module);
# `mnist_tf` alone is the package's __init__.
LAYERS = (
    ("entry points", ("mnist_tf", "mnist_tf.__main__", "mnist_tf.train", "mnist_tf.evaluate",
                      "mnist_tf.predict", "mnist_tf.export", "mnist_tf.plot", "mnist_tf.cli",
                      "mnist_tf.serve")),
    ("api", ("mnist_tf.api",)),
    ("inference and figures", ("mnist_tf.inference", "mnist_tf.figures")),
    ("training", ("mnist_tf.training",)),
    ("run support", ("mnist_tf.analysis", "mnist_tf.images", "mnist_tf.config",
                     "mnist_tf.workdir", "mnist_tf.devices", "mnist_tf.memory", "mnist_tf.disk")),
    ("model and data", ("mnist_tf.model", "mnist_tf.data")),
    ("maths and choices", ("mnist_tf.resample", "mnist_tf.random_hash", "mnist_tf.choices")),
    ("foundations", ("mnist_tf.constants", "mnist_tf.errors", "mnist_tf.files", "mnist_tf.quiet")),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    """The index of `module`'s layer in `LAYERS` (its longest declared prefix); None if none."""
    best, best_length = None, -1
    for index, (_, names) in enumerate(LAYERS):
        for name in names:
            covers = module == name or (name != "mnist_tf" and module.startswith(name + "."))
            if covers and len(name) > best_length:
                best, best_length = index, len(name)
    return best


def package_imports(path: Path) -> set[str]:
    """The package's modules `path` imports (`from mnist_tf.model import mlp`: model.mlp)."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}

    def resolve(name):
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.update(resolve(f"{node.module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(resolve(alias.name) for alias in node.names)
    return found - {""}


def test_every_module_is_declared_in_a_layer():
    undeclared = [module_name(p) for p in sorted(PACKAGE.rglob("*.py"))
                  if layer_of(module_name(p)) is None]
    assert not undeclared, f"add these to LAYERS: {undeclared}"


def test_every_import_points_down():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        here = layer_of(module)
        for imported in sorted(package_imports(path)):
            there = layer_of(imported)
            if here is not None and there is not None and there < here:
                upward.append(f"{module} ({LAYERS[here][0]}) imports {imported} "
                              f"({LAYERS[there][0]})")
    assert not upward, upward


def test_the_import_check_sees_an_upward_import():
    assert layer_of("mnist_tf.model.mlp") > layer_of("mnist_tf.training.trainer")
    assert layer_of("mnist_tf.training.trainer") > layer_of("mnist_tf.api")
    assert layer_of("mnist_tf") == 0 and layer_of("mnist_tf.nothing") is None
    assert "mnist_tf.model.mlp" in package_imports(PACKAGE / "training" / "steps.py")


# Calls whose literal 10 is a class count or a shape, and names that hold one.
_SHAPE_CALLS = {"range", "reshape", "eye", "one_hot", "zeros", "ones", "full", "empty",
                "TensorSpec", "bincount", "confusion_matrix", "resize"}
_SIZE_NAME = ("CLASS", "DIGIT", "PIXEL", "SIDE", "SIZE")


def shape_literals(tree: ast.AST) -> list[int]:
    """Line numbers of image and class sizes written as literals in code (not text).

    28 and 784 are MNIST's side and pixel count wherever they appear; 10 is
    the class count where it sizes something: a shape or range argument, or a
    name for a size.
    """
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and type(node.value) is int):
            continue
        if node.value in (28, 784):
            lines.append(node.lineno)
        elif node.value == 10:
            parent = parents.get(node)
            if isinstance(parent, (ast.Tuple, ast.List)):
                parent = parents.get(parent)
            call = parent.func if isinstance(parent, ast.Call) else None
            called = getattr(call, "attr", getattr(call, "id", None))
            named = isinstance(parent, ast.Assign) and any(
                isinstance(t, ast.Name) and any(w in t.id.upper() for w in _SIZE_NAME)
                for t in parent.targets)
            if called in _SHAPE_CALLS or named:
                lines.append(node.lineno)
    return sorted(lines)


def test_the_shape_check_finds_sizes_and_leaves_other_numbers():
    source = ("x.reshape(-1, 28, 28)\nn = 784\nrange(10)\nNUM_CLASSES = 10\n"
              "epochs = 10\nf(x, 10)\nm = '28 pixels'\n")
    assert shape_literals(ast.parse(source)) == [1, 1, 2, 3, 4]


def test_shapes_and_normalisation_are_written_once():
    # MNIST's sizes (28, 784, 10 classes) and the /255 normalisation live in
    # constants.py alone; a number in a message or docstring is text, not a
    # second definition.
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "constants.py":
            continue
        tree = ast.parse(path.read_text())
        lines = shape_literals(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
                    and isinstance(node.right, ast.Constant) and node.right.value == 255):
                lines.append(node.lineno)
        offenders += [f"{path.relative_to(PACKAGE)}:{line}" for line in sorted(set(lines))]
    assert not offenders, offenders
