"""Every example in kerasbert's docstrings runs and prints what it shows.

Examples read `../shared/data` relative to the project root, so each module's
examples run in a scratch folder that has `../shared` beside it."""

import doctest
import importlib

import pytest

from tests.conftest import ROOT, SHARED_DATA

SOURCES = {".".join(path.relative_to(ROOT / "kerasbert").with_suffix("").parts): path.read_text()
           for path in sorted((ROOT / "kerasbert").rglob("*.py"))}
WITH_EXAMPLES = [name for name, text in SOURCES.items() if ">>>" in text]
# Examples that read the real reviews or weights belong to the slow tier.
HEAVY = ("../shared", "resolve_preset")


def example_params():
    return [pytest.param(name, marks=[pytest.mark.slow, pytest.mark.shared_data]
                         if any(marker in SOURCES[name] for marker in HEAVY) else [], id=name)
            for name in WITH_EXAMPLES]


@pytest.mark.parametrize("name", example_params())
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    (tmp_path / "shared").symlink_to(SHARED_DATA.parent, target_is_directory=True)
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    module = importlib.import_module(f"kerasbert.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} of {result.attempted} examples failed"


def test_most_modules_have_examples_and_none_is_skipped():
    assert len(WITH_EXAMPLES) >= 10
    skipped = [name for name, text in SOURCES.items() if "+SKIP" in text]
    assert not skipped, f"examples skipped instead of run or removed: {skipped}"
