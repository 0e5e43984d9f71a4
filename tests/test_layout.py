"""The shape of the code: project modules import each other one way (no cycle, imports inside
functions counted), none is over 400 lines, builders stay pure, the formatter is not fought."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sweep", "models", "reports")
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """Every project module by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports anywhere in it (top level, functions, TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path A -> ... -> A, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_lazy_cycle(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("import b\n")
    b.write_text("def f():\n    from a import x\n")
    edges = {"a": imports(a, {"a", "b"}), "b": imports(b, {"a", "b"})}
    assert find_cycle(edges) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_project_module_imports_one_that_imports_it_back() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_builders_and_the_report_depend_only_on_what_they_should() -> None:
    edges = graph()
    for name, targets in edges.items():
        if name.startswith("models"):
            assert all(t.startswith("models") for t in targets), (name, targets)
        if name.startswith("reports"):
            allowed = ("reports", "sweep.errors", "sweep.storage", "sweep.tracking", "sweep.points")
            assert all(t.startswith(allowed) or t == "sweep" for t in targets), (name, targets)
    for path in (ROOT / "models").glob("*.py"):
        tree = ast.parse(path.read_text())
        heavy = {"optuna", "mlflow", "sweep"}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                top = (
                    node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                ) or ""
                assert top.split(".")[0] not in heavy, f"{path.name} imports {top}"


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_is_over_400_lines(name: str) -> None:
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"


def test_the_formatter_is_not_fought() -> None:
    files = [p for d in (*PACKAGES, "tests", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    marker = "# fmt: " + "skip"
    skips = {p.name: p.read_text().count(marker) for p in files}
    assert sum(skips.values()) < 5, {k: v for k, v in skips.items() if v}
