"""SIGKILL at chosen crash points: just before the k-th rename that publishes a file or a
version (the temporary is written and flushed, the target not yet replaced), across a
tiny training run with backups, its export and a predict. After each kill every
published file is whole, and the same command run again completes.

(`benchmarks/kill_points.py` kills the README's smoke job at random moments instead.)
"""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from kill_points import unwhole_files  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

# Runs a script with os.replace counting its calls; the KILL_AT_RENAME-th call kills the process
# instead. With KILL_AT_RENAME=0 nothing is killed and the count is printed at exit.
KILL_BEFORE_RENAME = """
import atexit, os, runpy, signal, sys
kill_at, calls, replace = int(os.environ["KILL_AT_RENAME"]), [0], os.replace
def counting_replace(*args, **kwargs):
    calls[0] += 1
    if calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(*args, **kwargs)
os.replace = counting_replace
atexit.register(lambda: print(f"renames: {calls[0]}", file=sys.stderr))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run(command, kill_at=0):
    completed = subprocess.run([sys.executable, "-c", KILL_BEFORE_RENAME, *command], cwd=ROOT, capture_output=True,
                               text=True, env={**os.environ, "KILL_AT_RENAME": str(kill_at)}, timeout=900)
    return completed


def renames_of(command):
    completed = run(command)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return int(completed.stderr.rsplit("renames: ", 1)[1].split()[0])


def crash_points(total):
    """The first rename (config.json: nothing backed up yet, so the rerun starts over) and the
    last but one (the end of the run: the rerun resumes from the backup and finishes).
    tests/test_distribution.py kills a run mid-epoch; benchmarks/kill_points.py at random moments."""
    return [1, total - 1]


def assert_killed_then_completed(command, kill_at, folder):
    killed = run(command, kill_at)
    assert killed.returncode == -9, f"rename {kill_at} was not reached: {killed.stderr[-2000:]}"
    assert unwhole_files(folder) == [], f"after a kill before rename {kill_at}"
    rerun = run(command)
    assert rerun.returncode == 0, f"rerun after a kill before rename {kill_at}: {rerun.stderr[-3000:]}"
    assert unwhole_files(folder) == []


@pytest.fixture(scope="module")
def training(tiny_backbone):
    """`training(output_dir)`: the command of a tiny two-epoch run with a backup every two steps."""
    return lambda output_dir: [os.path.join(ROOT, "train.py"), "--output-dir", str(output_dir), *TINY, *tiny_backbone,
                               "--epochs", "2", "--backup-every-steps", "2"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, training):
    run_dir = tmp_path_factory.mktemp("crash") / "run"
    total = renames_of(training(run_dir))
    return run_dir, total


def test_training_killed_before_any_rename_is_whole_and_completes_when_run_again(finished, training, tmp_path):
    _, total = finished
    assert total > 10, "config, backups, best weights, pictures, model, metrics and report are each renamed"
    for kill_at in crash_points(total):
        folder = tmp_path / f"kill-{kill_at}"
        assert_killed_then_completed(training(folder / "run"), kill_at, folder)
        assert os.path.isfile(folder / "run" / "metrics.json") and not os.path.exists(folder / "run" / "backup")


def test_export_and_predict_killed_before_any_rename_complete_when_run_again(finished, tmp_path):
    run_dir, _ = finished
    export = [os.path.join(ROOT, "export.py"), "--run", str(run_dir), "--export-root", str(tmp_path / "exports"),
              "--parity-examples", "0", "--tflite", "float32"]
    total = renames_of(export)
    versions = [1]
    for kill_at in [total // 2]:  # mid-export
        assert_killed_then_completed(export, kill_at, tmp_path / "exports")
        published = sorted(int(name) for name in os.listdir(tmp_path / "exports" / "kerasbert") if name.isdigit())
        assert published == list(range(1, len(published) + 1)) and len(published) > len(versions)
        versions = published

    reviews = tmp_path / "reviews.txt"
    reviews.write_text("a fine film\n\na dull film\n")
    output = tmp_path / "predictions.jsonl"
    output.write_text('{"an earlier": "output"}\n')
    predict = [os.path.join(os.path.dirname(sys.executable), "kerasbert"), "predict", "--model",
               str(run_dir / "model.keras"), "--input", str(reviews), "--output", str(output)]
    killed = run(predict, kill_at=1)
    assert killed.returncode == -9 and output.read_text() == '{"an earlier": "output"}\n', "the old output is whole"
    assert run(predict).returncode == 0 and len(output.read_text().splitlines()) == 3
