"""The package's shape: three parts whose imports run one way (job -> deploy -> library),
checked on the source and on what importing really loads; no import cycles, short modules;
and the test suite's (without ../shared, only the tests that read it fail)."""

import ast
import json
import pathlib
import re
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "kerasbert"
PARTS = ("job", "deploy")  # every other module of the package is the library


def module_name(path):
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def part_of(module):
    """`library`, `deploy` or `job`."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 and pieces[1] in PARTS else "library"


def imported_modules(path):
    """The kerasbert modules a file imports anywhere in it (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kerasbert"):
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("kerasbert")}
    return found


def import_graph():
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path) & set(modules) - {name} for name, path in modules.items()}


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
    graph = {name: targets for name, targets in import_graph().items() if name != "kerasbert"}
    graph = {name: {target for target in targets if target != "kerasbert"} for name, targets in graph.items()}
    assert len(graph) > 25 and "kerasbert.job.training" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


ORDER = {"library": 0, "deploy": 1, "job": 2}


def test_imports_in_the_source_run_job_deploy_library():
    uphill = sorted(f"{name} imports {target}" for name, targets in import_graph().items() for target in targets
                    if ORDER[part_of(target)] > ORDER[part_of(name)])
    assert not uphill, uphill
    assert part_of("kerasbert.job.cli") == "job" and part_of("kerasbert.model") == "library"


LOADED = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(name for name in sys.modules if name.startswith("kerasbert"))))
"""


def loaded_by_importing(modules):
    result = subprocess.run([sys.executable, "-c", LOADED, *modules], capture_output=True, text=True,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_library_loads_neither_deploy_nor_job_and_deploy_loads_no_job():
    graph = import_graph()
    library = sorted(name for name in graph if part_of(name) == "library")
    loaded = loaded_by_importing(library)
    assert "kerasbert.model" in loaded and "kerasbert.data" in loaded
    assert [name for name in loaded if part_of(name) != "library"] == []
    loaded = loaded_by_importing(sorted(name for name in graph if part_of(name) == "deploy"))
    assert "kerasbert.deploy.serving" in loaded and [name for name in loaded if part_of(name) == "job"] == []
    # The check can fail: the job does load the other parts.
    assert {part_of(name) for name in loaded_by_importing(["kerasbert.job.exporting"])} == {"library", "deploy", "job"}


def long_modules(package, limit=300):
    """The modules under `package` (a folder) longer than `limit` lines, with their lengths."""
    lengths = {path.relative_to(package).as_posix(): len(path.read_text().splitlines())
               for path in package.rglob("*.py")}
    return {name: length for name, length in lengths.items() if length > limit}


def test_no_module_is_long(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "long.py").write_text("x = 1\n" * 301)
    (tmp_path / "short.py").write_text("x = 1\n" * 300)
    assert long_modules(tmp_path) == {"sub/long.py": 301}  # the check sees a planted long module, in a subfolder
    assert long_modules(PACKAGE) == {}


def named_modules(text):
    """The kerasbert modules a text names: as paths (kerasbert/deploy/serving.py) or dotted, in
    backquotes (`kerasbert.job.resume`, `kerasbert.deploy.saved_model`: a module and a name in it)."""
    paths = {name[:-3].replace("/", ".") for name in re.findall(r"\bkerasbert/[\w/]+\.py\b", text)}
    return paths | set(re.findall(r"`(kerasbert(?:\.\w+)+)", text))


def unresolved(name, modules):
    """None if `name` is a module of `modules` (name -> source) or a name defined at the top of
    the longest such module it starts with; else `name`."""
    pieces = name.split(".")
    for count in range(len(pieces), 0, -1):
        module = ".".join(pieces[:count])
        if module in modules:
            if count == len(pieces):
                return None
            defined = rf"^(?:def|class) {pieces[count]}\b|^{pieces[count]} =|\bimport\b.*\b{pieces[count]}\b|\"{pieces[count]}\""
            return None if re.search(defined, modules[module], re.MULTILINE) else name
    return name


def test_the_modules_the_package_names_exist():
    modules = {module_name(path): path.read_text() for path in PACKAGE.rglob("*.py")}
    assert unresolved("kerasbert.serving", modules) == "kerasbert.serving"  # an old path is caught
    assert unresolved("kerasbert.deploy.saved_model", modules) is None
    named = set().union(*(named_modules(text) for text in modules.values()))
    assert "kerasbert.deploy.serving" in named
    assert sorted(name for name in named if unresolved(name, modules)) == []


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
