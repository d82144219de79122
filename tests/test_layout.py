"""The package layout: dependencies point one way, modules and functions stay small, and no
module reaches into another's private names (docs/design.md, "Layout")."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "meanfield"

# Lower levels never import higher ones; within a level, only modules of the same group import
# each other (so recursions and montecarlo stay independent engines).
LEVELS = {
    "core": 0,
    "io": 0,  # the package root only; its modules have levels of their own
    "io.results": 0,
    "layers": 1,
    "theory": 2,
    "inits": 3,
    "recursions": 4,
    "montecarlo": 4,
    "analysis": 5,
    "training": 6,
    "io.plots": 7,
}
# NamedTuple's own public API starts with an underscore.
_NAMEDTUPLE_API = ("_replace", "_asdict", "_fields", "_make", "_field_defaults")
MAX_MODULE_LINES = 420
MAX_FUNCTION_LINES = 80


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        yield name, path


def _group(module: str) -> str | None:
    """The LEVELS key a module belongs to (longest prefix), None for the package root."""
    inner = module.removeprefix("meanfield").removeprefix(".")
    best = None
    for key in LEVELS:
        if inner == key or inner.startswith(key + "."):
            if best is None or len(key) > len(best):
                best = key
    return best


def _imports(tree: ast.AST, module: str, is_package: bool):
    """(imported meanfield module, names imported from it, line) for every import."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("meanfield"):
                    yield alias.name, (), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = module.split(".")
                parts = parts if is_package else parts[:-1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if not base.startswith("meanfield"):
                continue
            names = tuple(a.name for a in node.names)
            if base == "meanfield":  # from meanfield import X: X may be a module
                for name in names:
                    yield f"meanfield.{name}", (), node.lineno
            else:
                yield base, names, node.lineno


MODULES = list(_modules())


def test_every_module_has_a_level():
    missing = [m for m, _ in MODULES if m != "meanfield" and _group(m) is None]
    assert not missing, f"modules outside the layout's levels: {missing}"


@pytest.mark.parametrize("module, path", MODULES, ids=[m for m, _ in MODULES])
def test_dependencies_point_one_way(module, path):
    if module == "meanfield":
        return  # the package root re-exports the public names of every level
    mine = _group(module)
    tree = ast.parse(path.read_text())
    for target, _, line in _imports(tree, module, path.name == "__init__.py"):
        theirs = _group(target)
        if theirs is None or theirs == mine:
            continue
        assert LEVELS[theirs] < LEVELS[mine], (
            f"{module} (level {LEVELS[mine]}, {mine}) imports {target} (level "
            f"{LEVELS[theirs]}, {theirs}) at line {line}: dependencies must point down"
        )


def test_a_wrong_way_import_is_caught():
    """The check above can fail: core importing the engines is refused."""
    tree = ast.parse("from meanfield import montecarlo\nimport meanfield.analysis.solver\n")
    found = [t for t, _, _ in _imports(tree, "meanfield.core.architecture", False)]
    assert found == ["meanfield.montecarlo", "meanfield.analysis.solver"]
    assert all(LEVELS[_group(t)] > LEVELS[_group("meanfield.core.architecture")] for t in found)


@pytest.mark.parametrize("module, path", MODULES, ids=[m for m, _ in MODULES])
def test_modules_and_functions_are_small(module, path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{module}: {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{module}.{node.name}: {length} lines"


@pytest.mark.parametrize("module, path", MODULES, ids=[m for m, _ in MODULES])
def test_no_private_name_of_another_module_is_used(module, path):
    tree = ast.parse(path.read_text())
    aliases = {}  # local name -> the meanfield module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("meanfield"):
            for alias in node.names:
                assert not alias.name.startswith("_"), (
                    f"{module} imports the private {alias.name} from {node.module}"
                )
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("meanfield") and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and node.attr not in _NAMEDTUPLE_API
        ):
            raise AssertionError(
                f"{module} uses the private {node.value.id}.{node.attr} at line {node.lineno}"
            )
