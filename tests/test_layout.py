"""The package keeps its layers: imports only run downward, no module imports itself back in a
circle, and modules and functions stay small enough to read in one sitting. And the map of the
package, docs/layout.md, stays true: its layer table is the one statement of the layer order
(read here, with no copy of it in this file), and its module tables name every module on disk
and no other.

``model`` and ``inference`` sit side by side and never import each other: objectives know
traces, not the VAE class. (``__init__.py`` is the package's face and imports everything.)
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pyro_vae"
LAYOUT = ROOT / "docs" / "layout.md"
LAYERS_BLOCK = ("<!-- layers: begin", "<!-- layers: end -->")
MODULES_BLOCK = ("<!-- modules: begin", "<!-- modules: end -->")


def _block(marks: tuple[str, str]) -> str:
    """The part of docs/layout.md between a pair of marker comments."""
    text = LAYOUT.read_text()
    begin, end = marks
    found = text.count(begin) == 1 and text.count(end) == 1
    assert found, f"docs/layout.md needs one {begin} ... -->, then one {end}"
    return text.split(begin, 1)[1].split("\n", 1)[1].split(end, 1)[0]


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row (an escaped ``\\|`` stays inside its cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def _table_rows(lines: list[str]) -> list[tuple[int, list[str]]]:
    """(index, cells) of each body row of the Markdown tables in ``lines``: the header (the row
    above a |---| rule) and the rule itself left out."""
    rule = re.compile(r"^\|[\s|:-]+\|$")
    rows = []
    for i, line in enumerate(lines):
        if not line.startswith("|") or rule.match(line):
            continue
        if i + 1 < len(lines) and rule.match(lines[i + 1]):
            continue  # a header
        rows.append((i, _cells(line)))
    return rows


@functools.cache
def _layers() -> tuple[frozenset[str], ...]:
    """The layer order as docs/layout.md states it, lowest first: the roles of each layer."""
    rows = [cells for _, cells in _table_rows(_block(LAYERS_BLOCK).splitlines())]
    numbers = [r[0] for r in rows]
    assert numbers == [str(i) for i in range(1, len(rows) + 1)], (
        f"docs/layout.md: the layer table's rows must be numbered 1, 2, ... in order: {numbers}"
    )
    return tuple(frozenset(re.findall(r"`([^`]+)`", r[1])) for r in rows)


def _documented_modules() -> list[tuple[str, str]]:
    """(path, job) of each row of docs/layout.md's module tables, the path as on disk
    (``pyro_vae/data/binarize.py``): a row's module lives in the folder of the heading above
    its table."""
    lines = _block(MODULES_BLOCK).splitlines()
    headings = [(i, m[1]) for i, line in enumerate(lines) if (m := re.match(r"#+ `(.+/)`", line))]
    found = []
    for i, cells in _table_rows(lines):
        folder = next((f for at, f in reversed(headings) if at < i), "?/")
        found.append((folder + cells[0].strip("`"), cells[1] if len(cells) > 1 else ""))
    return found


def _suggested_row(path: str) -> str:
    """A row for a module missing from docs/layout.md, from its docstring's first sentence."""
    doc = ast.get_docstring(ast.parse((ROOT / path).read_text())) or "..."
    job = " ".join(doc.split()).split(". ")[0].rstrip(".").replace("|", "\\|")
    return f"| `{Path(path).name}` | {job} |"


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
    return next(i for i, roles in enumerate(_layers()) if role in roles)


def test_every_module_has_a_layer():
    roles = {name.split(".")[0] for name in _modules() if name}
    placed = set().union(*_layers())
    assert roles <= placed, (
        f"roles with no layer in docs/layout.md's layer table: {sorted(roles - placed)}"
    )


def test_the_layer_table_names_only_roles_that_exist():
    roles = {name.split(".")[0] for name in _modules() if name}
    placed = [role for layer in _layers() for role in sorted(layer)]
    gone = sorted(set(placed) - roles)
    twice = sorted({role for role in placed if placed.count(role) > 1})
    assert not gone, f"docs/layout.md's layer table names roles that are not in pyro_vae/: {gone}"
    assert not twice, f"docs/layout.md's layer table puts roles in two layers: {twice}"


def test_the_map_names_every_module_and_only_those():
    rows = _documented_modules()
    documented = [path for path, _ in rows]
    on_disk = sorted(str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py"))
    missing = [p for p in on_disk if p not in documented]
    gone = [p for p in documented if p not in on_disk]
    twice = sorted({p for p in documented if documented.count(p) > 1})
    wordless = [path for path, job in rows if not job]
    problems = [
        *(
            f"  missing: {p}; add under ### `{p.rsplit('/', 1)[0]}/`:  {_suggested_row(p)}"
            for p in missing
        ),
        *(
            f"  gone from disk: {p}; remove its row (or move it where the module went)"
            for p in gone
        ),
        *(f"  listed twice: {p}" for p in twice),
        *(f"  no job given: {p}" for p in wordless),
    ]
    assert not problems, "docs/layout.md's module tables and pyro_vae/ differ:\n" + "\n".join(
        problems
    )


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


# the code beside the package keeps the same sizes: the benchmark and the fault-injection harness
BESIDE = [*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "tests" / "fault_injection").glob("*.py")]


@pytest.mark.parametrize(
    "path",
    sorted(PACKAGE.rglob("*.py")) + sorted(BESIDE),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_modules_and_functions_stay_small(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_FUNCTION_LINES, f"{node.name}: {lines} lines"
