"""The package's shape: no import cycles between kerasbert's modules, at module or function level."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "kerasbert"


def imported_modules(path):
    """The kerasbert modules a file imports anywhere in it (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kerasbert"):
            if node.module == "kerasbert":
                found |= {f"kerasbert.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("kerasbert.")}
    return found


def import_graph():
    modules = {f"kerasbert.{path.stem}": path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    return {name: imported_modules(path) & set(modules) for name, path in modules.items()}


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(module, trail):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return trail[trail.index(target):] + [target]
            if target not in state:
                cycle = visit(target, trail + [target])
                if cycle:
                    return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [module])
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_kerasbert_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 10 and "kerasbert.training" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
