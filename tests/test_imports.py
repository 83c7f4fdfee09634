"""The package's import structure: no import cycle in any import order, no hidden imports.

The graph is read from the source (imports inside functions included), so it holds for every
import order; that every module imports at all is checked by the doctest collection, which
imports each one. Imports inside functions are kept for the command line (``calogan.cli``:
``calogan --help`` must not import torch) and for optional dependencies (onnx, onnxruntime);
anywhere else an import of a calogan module inside a function would hide a cycle, so it is
refused here.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "calogan"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(node: ast.AST, module: str, is_package: bool) -> set[str]:
    """calogan modules an import statement loads (a from-import of a submodule counts as the submodule)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        names = [base] + [f"{base}.{alias.name}" for alias in node.names]
    else:
        return set()
    return {n for n in names if n in MODULES}


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """Edges module -> the calogan modules it imports anywhere (functions included), plus the
    package __init__ files that loading them runs; and the hidden imports found."""
    graph, hidden = {}, []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(tree):
            targets = imported_modules(node, name, is_package)
            for target in targets:
                parts = target.split(".")
                # importing a.b.c runs a/__init__ and a/b/__init__ first, unless we are inside them
                for k in range(2, len(parts) + 1):
                    prefix = ".".join(parts[:k])
                    if not (name == prefix or name.startswith(prefix + ".")):
                        edges.add(prefix)
            if targets and node.col_offset > 0 and not name.startswith("calogan.cli"):
                hidden.append(f"{path.relative_to(SRC)}:{node.lineno} imports {', '.join(sorted(targets))} inside a function")
        edges.discard(name)
        graph[name] = edges
    return graph, hidden


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_there_is_no_import_cycle_and_no_hidden_import():
    graph, hidden = import_graph()
    assert len(graph) > 40 and "calogan.fastsim.router" in graph["calogan.fastsim"]
    assert hidden == []
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # the inference layering: export and generate build on fastsim, never the reverse
    for user in ("calogan.export", "calogan.generate"):
        assert any(m.startswith("calogan.fastsim") for m in graph[user])
    for name, edges in graph.items():
        if name.startswith("calogan.fastsim"):
            assert not edges & {"calogan.export", "calogan.generate", "calogan.training", "calogan.cli"}, name
    assert "calogan.models" not in graph["calogan.config"]


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
