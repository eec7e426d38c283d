"""The walls of the tree, read from its source (no imports run): the import
graph has no cycle, lazy imports included; the simulator, apply and the
receiver import only what their place allows; only db/dialect.py asks which
database it is talking to."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "syncd"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imported(name: str, path: Path) -> set[str]:
    """Every syncd module ``name`` imports, wherever the import statement is."""
    known = modules()
    found: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                whole = f"{base}.{alias.name}"
                found.add(whole if whole in known else base)
    return {module for module in found if module in known and module != name}


@cache
def graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(_imported(name, path)) for name, path in modules().items()}


def _cycles() -> list[list[str]]:
    edges = graph()
    done: set[str] = set()
    path: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        path.append(node)
        for target in sorted(edges[node]):
            if target in path:
                found.append([*path[path.index(target) :], target])
            elif target not in done:
                visit(target)
        path.pop()
        done.add(node)

    for node in sorted(edges):
        if node not in done:
            visit(node)
    return found


def _reaches(start: str) -> set[str]:
    edges, todo = graph(), [start]
    seen: set[str] = set()
    while todo:
        for target in edges[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_the_graph_reads_the_imports_it_should() -> None:
    # The reader itself: a miss here would make the other tests pass vacuously.
    assert len(modules()) > 30
    assert {"syncd.shoperti.wire", "syncd.db.dialect"} <= graph()["syncd.apply"]
    assert "syncd.inbox" in graph()["syncd.receiver"]


def test_the_import_graph_has_no_cycle() -> None:
    assert _cycles() == []


def test_the_simulator_imports_nothing_of_the_daemon() -> None:
    outside = {m for m in _reaches("syncd.simulator") if not m.startswith("syncd.simulator")}
    assert outside <= {"syncd"}, sorted(outside)


def test_apply_makes_no_network_calls_and_the_receiver_never_applies() -> None:
    assert "syncd.shoperti.client" not in _reaches("syncd.apply")
    assert "syncd.apply" not in _reaches("syncd.receiver")


DIALECT_QUESTION = re.compile(r"get_backend_name\(|dialect\.name\b|\.driver\b")


def test_only_the_dialect_module_asks_which_database_it_is() -> None:
    asking = sorted(
        name
        for name, path in modules().items()
        if DIALECT_QUESTION.search(path.read_text(encoding="utf-8"))
    )
    assert asking == ["syncd.db.dialect"]
