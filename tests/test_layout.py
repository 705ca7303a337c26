"""The package's shape (no import cycles, short modules, the library apart from the job,
docstring examples that run) and the test suite's (without ../shared, only the tests that
read it fail)."""

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


# The command-line jobs: the only modules that read a TrainConfig. The library takes numbers.
JOB_MODULES = {"kerasbert.config", "kerasbert.arguments", "kerasbert.cli", "kerasbert.training", "kerasbert.parity"}


def names_used(path):
    return {node.id for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Name)} | {
        alias.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)
        for alias in node.names}


def test_only_the_jobs_use_the_command_line_config():
    users = {f"kerasbert.{path.stem}" for path in PACKAGE.glob("*.py") if "TrainConfig" in names_used(path)}
    assert "kerasbert.arguments" in users
    assert users <= JOB_MODULES, f"library modules that take a TrainConfig: {sorted(users - JOB_MODULES)}"


def test_no_module_is_long():
    lengths = {path.name: len(path.read_text().splitlines()) for path in PACKAGE.glob("*.py")}
    assert max(lengths.values()) > 100
    assert not {name: n for name, n in lengths.items() if n > 300}


def test_without_shared_data_only_the_tests_that_read_it_fail_each_with_one_line(tmp_path):
    import os
    import subprocess
    import sys

    root = PACKAGE.parent
    selected = ["tests/test_progress.py::test_a_run_of_warm_up_steps_only_gets_no_estimate",
                "tests/test_data.py::test_tfds_imdb_gives_seeded_disjoint_train_and_validation"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selected], cwd=root,
                            capture_output=True, text=True,
                            env={**os.environ, "KERASBERT_SHARED_DATA": str(tmp_path / "no-such-folder")})
    assert result.returncode == 1, result.stdout[-2000:]
    assert "1 passed, 1 error" in result.stdout  # failed in its setup, before it ran
    assert f"reads the real IMDB reviews in {tmp_path / 'no-such-folder'}, which does not exist" in result.stdout
    assert "Traceback" not in result.stdout
