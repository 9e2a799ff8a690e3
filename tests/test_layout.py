"""The package keeps its layers: imports only run downward, no module imports itself back in a
circle, and modules and functions stay small enough to read in one sitting.

    registry, densities, param_store, progress, version    shared leaves
    data                                datasets, binarization, contexts, synthetic counts
    model | inference                   the generative story | objectives and measures
    checks                              the hand-written yardsticks
    training                            options, assembly, the loop, the run directory
    report                              figures and the HTML page
    workflow                            whole runs from Python
    studies                             one module per study
    cli                                 the command line
    __main__                            python -m pyro_vae

``model`` and ``inference`` sit side by side and never import each other: objectives know
traces, not the VAE class. (``__init__.py`` is the package's face and imports everything.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pyro_vae"
LAYERS = [
    {"registry", "densities", "param_store", "progress", "version"},
    {"data"},
    {"model", "inference"},
    {"checks"},
    {"training"},
    {"report"},
    {"workflow"},
    {"studies"},
    {"cli"},
    {"__main__"},
]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    """Dotted module name (without 'pyro_vae.') -> file, __init__ files as their package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _runtime_imports(path: Path, name: str, is_package: bool) -> set[str]:
    """Modules of this package that ``path`` imports when it runs (imports under
    ``if TYPE_CHECKING:`` are for type checkers only and are left out)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    package = name.split(".") if is_package else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = [*base, *(node.module.split(".") if node.module else [])]
            elif (node.module or "").startswith("pyro_vae"):
                module = node.module.split(".")[1:]
            else:
                continue
            if node.module:  # "from . import x" imports the submodule x, not the package
                targets.add(".".join(module))
            targets.update(".".join([*module, a.name]) for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pyro_vae."):
                    targets.add(alias.name.split(".", 1)[1])
    return targets


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        graph[name] = {t for t in _runtime_imports(path, name, is_package) if t in modules}
        graph[name].discard(name)
    return graph


def _layer(module: str) -> int:
    role = module.split(".")[0]
    return next(i for i, roles in enumerate(LAYERS) if role in roles)


def test_every_module_has_a_layer():
    roles = {name.split(".")[0] for name in _modules() if name}
    assert roles <= set().union(*LAYERS), roles - set().union(*LAYERS)


def test_imports_run_downward():
    upward = []
    for module, imported in _graph().items():
        if not module:  # the package's face
            continue
        for target in imported:
            same_role = target.split(".")[0] == module.split(".")[0]
            if target and not same_role and _layer(target) >= _layer(module):
                upward.append(f"{module} imports {target}")
    assert not upward, upward


def test_no_import_circles():
    graph = {m: {t for t in ts if t} for m, ts in _graph().items() if m}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*path, module, target]
            if target not in state:
                circle = visit(target, [*path, module])
                if circle:
                    return circle
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            circle = visit(module, [])
            assert circle is None, " -> ".join(circle)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_modules_and_functions_stay_small(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_FUNCTION_LINES, f"{node.name}: {lines} lines"
