"""`train.py` on streamed data (issue 38), in fresh processes as users run it: shards stream
without being asked, a killed streamed run resumes to exactly the weights of an uninterrupted
one, and a malformed row or unknown label ends in one line naming its file."""

import csv
import gzip
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from kerasbert import data, files
from kerasbert.distribution import loopback_cluster
from kerasbert.model import load_classifier
from tests.conftest import ROOT, TFDS_DIR, TINY, kill_after_backup

STREAMED = ["--max-train-examples", "0", "--max-test-examples", "0", "--epochs", "2", "--backup-every-steps", "2"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """200 real training reviews in two gzipped CSV shards, and 24 more as the test file (class names, not numbers)."""
    reviews = data.read_tfds_split("imdb_reviews", str(TFDS_DIR), "train").sample(224, seed=5)
    folder = tmp_path_factory.mktemp("streamed")
    (folder / "train").mkdir()
    for index, rows in enumerate((range(0, 100), range(100, 200))):
        with gzip.open(folder / "train" / f"part-{index}.csv.gz", "wt", newline="") as file:
            write_rows(file, reviews, rows)
    with open(folder / "test.csv", "w", newline="") as file:
        write_rows(file, reviews, range(200, 224))
    return folder


def write_rows(file, reviews, rows):
    writer = csv.writer(file)
    writer.writerow(["label", "text"])
    writer.writerows([("neg", "pos")[reviews.labels[row]], " ".join(reviews.texts[row].split()[:40])] for row in rows)


def test_a_streamed_run_killed_after_a_backup_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, shards, train):
    sources = [*STREAMED, "--train-file", str(shards / "train"), "--test-file", str(shards / "test.csv")]
    output = train(tmp_path / "uninterrupted", *sources)
    assert "streaming the data" in output, "a folder of gzipped shards streams without being asked"
    assert "ran out of data" not in output, "Keras knows the epoch's length from the counting pass"
    uninterrupted = files.read_json(tmp_path / "uninterrupted" / "metrics.json")
    steps = uninterrupted["optimizer_steps"] // 2
    assert uninterrupted["examples"]["train"] + uninterrupted["examples"]["validation"] == 200
    assert uninterrupted["examples"]["test"] == 24 and uninterrupted["class_names"] == ["neg", "pos"]

    # As the README shows it: a glob of gzipped shards, `--streaming` asked for; the same files as the folder.
    sources = [*STREAMED, "--train-file", str(shards / "train" / "*.csv.gz"), "--test-file", str(shards / "test.csv"),
               "--streaming"]
    run = tmp_path / "killed"
    state = kill_after_backup([train(run, *sources, wait=False)], run, step=4)
    assert 0 < state["step_in_epoch"] < steps or state["epoch"] == 1, f"the kill came too late: {state}"

    output = train(run, *sources)  # the same command again
    assert f"step {state['step_in_epoch']} of {steps} (global step {state['global_step']})" in output
    resumed = files.read_json(run / "metrics.json")
    assert resumed["optimizer_steps"] == uninterrupted["optimizer_steps"]
    for mine, theirs in zip(load_classifier(str(run / "model.keras")).get_weights(),
                            load_classifier(str(tmp_path / "uninterrupted" / "model.keras")).get_weights()):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("content, options, message", [
    ("text,label\nfine film,pos\nnot a row\ndull film,neg\n", [],
     "train.csv: line 3 has fewer fields than the header"),
    ('{"text": "fine film", "label": "pos"}\n{"text": "dull"\n', [], "train.jsonl: line 2 is not valid JSON"),
    ("text,label\nfine film,pos\ndull film,neg\nmeh,3 stars\n", ["--class-names", "neg,pos"],
     "train.csv has label '3 stars', which is not one of the classes neg, pos"),
])
def test_a_bad_row_in_a_streamed_file_ends_in_one_line_naming_it(tmp_path, tiny_backbone, content, options, message):
    name = "train.jsonl" if content.startswith("{") else "train.csv"
    (tmp_path / name).write_text(content)
    (tmp_path / "test.csv").write_text("text,label\ngreat,pos\nawful,neg\n")
    result = subprocess.run([sys.executable, "train.py", "--output-dir", str(tmp_path / "run"), *TINY, *STREAMED,
                             *tiny_backbone, "--train-file", str(tmp_path / name), "--test-file", str(tmp_path / "test.csv"),
                             "--streaming", *options], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "run")


def test_two_workers_each_stream_their_own_shards_and_resume_after_a_kill(tmp_path, shards, train):
    folder = tmp_path / "jsonl"
    folder.mkdir()
    rows = [{"text": text, "label": label} for text, label in read_csv_shards(shards / "train")]
    for index in range(4):
        (folder / f"part-{index}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[index::4]))
    cluster = loopback_cluster(2)
    run = tmp_path / "cluster-run"

    def workers(*options):
        return [train(run, *STREAMED, "--strategy", "multi-worker", "--train-file", str(folder), "--test-file",
                      str(shards / "test.csv"), "--class-names", "neg,pos", *options, wait=False,
                      env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})})
                for index in range(2)]

    chief = kill_after_backup(workers(), run, step=4)
    # Worker 1 as if killed while writing the backup the chief finished: it holds only the one before.
    peer = tmp_path / "cluster-run.worker-1" / "backup"
    newest = json.loads((peer / "state.json").read_text())
    if newest["global_step"] == chief["global_step"]:
        (peer / newest["weights"]).unlink()
        (peer / "previous-state.json").replace(peer / "state.json")
    state = json.loads((peer / "state.json").read_text())
    assert 0 < state["global_step"] < chief["global_step"]

    resumed = workers()
    outputs = [worker.communicate(timeout=900)[0] for worker in resumed]
    for worker, output in zip(resumed, outputs):
        assert worker.returncode == 0, output[-4000:]
    for index, output in enumerate(outputs):
        assert f"worker {index} of 2 reads 2 of 4 files of {folder}" in output
        assert f"(global step {state['global_step']})" in output, "resumed at the newest step both workers hold"
    counts = [int(re.search(r"\] (\d+) training, (\d+) validation", output).group(1)) for output in outputs]
    assert 60 < min(counts) <= max(counts) < 120, f"each worker reads about half the rows: {counts}"
    metrics = files.read_json(run / "metrics.json")
    assert metrics["workers"] == 2 and metrics["examples"]["test"] == 24


def read_csv_shards(folder):
    for path in sorted(folder.iterdir()):
        with gzip.open(path, "rt", newline="") as file:
            yield from ((row["text"], row["label"]) for row in csv.DictReader(file))
