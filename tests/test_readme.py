"""Every command the README shows runs in the test suite and ends as the README says.

`COVERAGE` lists each command line of the README's shell blocks with where it runs:
here (reduced to a tiny run where it is a full-size one), in a named test elsewhere, or
not at all, with the reason (hardware or binaries this machine does not have). A README
command missing from the table, or a table entry the README no longer shows, fails.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, SHARED_DATA, TFDS_DIR, TensorBoardServer

SHELL_STARTS = ("make ", "python ", "kerasbert ", "tensorboard ", "TF_CONFIG=", "TFDS_DATA_DIR=",
                "tensorflow_model_server ", "docker ", "curl ")
TINY_TRAINING = ["--max-train-examples", "40", "--max-test-examples", "16", "--validation-split", "0.2",
                 "--max-seq-length", "32", "--batch-size", "8", "--eval-batch-size", "16", "--log-every-steps", "1"]
TF_SERVING = "TF Serving's binary and Docker cannot be installed here; tests/test_export.py loads each version " \
             "as TF Serving does (fresh process, tensorflow and tensorflow_text only, warm-up replayed)"

COVERAGE = {
    "make train": "here",
    "make test": "CI: .ci/run runs it on a clean clone (a test cannot run the suite it is part of)",
    "TFDS_DATA_DIR=../shared/data/tensorflow_datasets .venv/bin/python examples/fit_imdb.py 2000 runs/mine":
        "tests/test_examples.py::test_fit_imdb_example_trains_two_epochs_saves_reloads_and_exports",
    "TFDS_DATA_DIR=../shared/data/tensorflow_datasets .venv/bin/python examples/fit_imdb_mirrored.py 2000 "
    "runs/mirrored": "tests/test_examples.py::test_mirrored_example_trains_on_two_replicas",
    "make train-best": "here (as make -n prints it, then its options on a tiny run)",
    "kerasbert adapt --output adapted/minilm-imdb --max-texts 30000":
        "tests/test_adaptation.py::test_sigterm_during_adaptation_backs_up_and_the_same_command_resumes_to_a_preset",
    "python train.py --preset adapted/minilm-imdb --max-seq-length 512": "here (reduced)",
    "python train.py --dataset ../shared/data/aclImdb_v1_labeled.tar.gz": "here",
    "python train.py --train-file reviews-train.csv --test-file reviews-test.csv": "here",
    "python train.py": "here (as make train's first command)",
    "python train.py --train-file 'reviews/train-*.csv.gz' --test-file reviews/test.csv.gz --streaming":
        "tests/test_streamed_training.py::test_a_streamed_run_killed_after_a_backup_ends_with_the_weights_of_an_"
        "uninterrupted_one",
    "python benchmarks/synthetic_reviews.py --rows 3000000 --length-scale 0.4 --output /tmp/synthetic/3m.csv":
        "tests/test_streaming.py::test_the_synthetic_set_generator_writes_shards_that_stream_back",
    "python train.py --preset bert_base_en_uncased": "here (no network: a one-line error)",
    "python train.py --preset hf://google-bert/bert-base-uncased": "here (no network: a one-line error)",
    "python train.py --preset /path/to/hf-or-kerashub-folder":
        "tests/test_presets.py::test_local_hugging_face_folder_loads",
    "tensorboard --logdir runs": "here",
    "python train.py --strategy mirrored": "here",
    "python train.py --strategy mirrored --logical-cpu-devices 2":
        "tests/test_distribution.py::test_mirrored_over_two_logical_cpus_matches_the_default_strategy",
    "python train.py --strategy tpu": "here (no TPU: a one-line error)",
    "python train.py --mixed-precision fp16 --jit-compile": "here",
    "TF_CONFIG='{\"cluster\": {\"worker\": [\"hostA:12345\", \"hostB:12345\"]}, \"task\": {\"type\": \"worker\", "
    "\"index\": 0}}' python train.py --strategy multi-worker --output-dir runs/two-hosts":
        "tests/test_distribution.py::test_two_workers_on_loopback_train_and_only_the_chief_keeps_outputs",
    "TF_CONFIG='{\"cluster\": {\"worker\": [\"hostA:12345\", \"hostB:12345\"]}, \"task\": {\"type\": \"worker\", "
    "\"index\": 1}}' python train.py --strategy multi-worker --output-dir runs/two-hosts":
        "tests/test_distribution.py::test_two_workers_on_loopback_train_and_only_the_chief_keeps_outputs",
    "python export.py --run runs/latest": "here (as make train's second command)",
    "tensorflow_model_server --model_name=kerasbert --model_base_path=\"$PWD/saved_models/kerasbert\" "
    "--enable_batching --batching_parameters_file=\"$PWD/saved_models/kerasbert/1/batching_parameters.txt\"":
        TF_SERVING,
    "docker run -p 8501:8501 -p 8500:8500 -v \"$PWD/saved_models/kerasbert:/models/kerasbert\" "
    "-e MODEL_NAME=kerasbert tensorflow/serving:2.21.0": TF_SERVING,
    "curl -d '{\"instances\": [\"A wonderful film.\", \"Two hours I will never get back.\"]}' "
    "http://localhost:8501/v1/models/kerasbert:predict": TF_SERVING,
    "kerasbert predict --model saved_models/kerasbert/1 \"A wonderful film.\" \"Dreadful.\"": "here",
    "kerasbert predict --model runs/latest/model.keras --input reviews.csv --output predictions.jsonl": "here",
    "kerasbert predict --model saved_models/kerasbert/tflite/1/dynamic-int8.tflite --input reviews.txt "
    "--output p.jsonl": "here",
}


def readme_commands():
    """The command lines of the README's shell blocks: comments cut, continuations joined."""
    commands, block, pending = [], None, ""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            block = None if block is not None else line[3:].strip()
            continue
        if block not in ("", "bash", "sh"):
            continue
        text = pending + re.sub(r"\s+#\s.*$", "", line).strip()
        if text.endswith("\\"):
            pending = text[:-1].strip() + " "
            continue
        pending = ""
        if text.startswith(SHELL_STARTS):
            commands.append(" ".join(text.split()))
    return commands


def test_the_table_covers_exactly_the_readme_commands():
    shown = readme_commands()
    assert len(shown) > 20
    assert sorted(set(shown) - set(COVERAGE)) == [], "README commands no test covers"
    assert sorted(set(COVERAGE) - set(shown)) == [], "table entries the README no longer shows"


def test_commands_covered_elsewhere_name_tests_that_exist():
    for where in COVERAGE.values():
        if where.startswith("tests/"):
            path, name = where.split("::")
            assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M), where


# What a parent `make test ARGS=...` passes down to any make below it; a user's shell has none of it.
PARENT_MAKE = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS")


def run(command, cwd, check=True):
    """`command` in `cwd` as from a user's shell (whatever runs the suite)."""
    env = {name: value for name, value in os.environ.items() if name not in PARENT_MAKE}
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900,
                               env={**env, "TFDS_DATA_DIR": str(TFDS_DIR)})
    if check:
        assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    return completed


@pytest.fixture(scope="module")
def readme_project(tmp_path_factory):
    """A folder where the README's commands run as in a checkout: the Makefile and scripts, and
    ../shared beside it; `make train` (reduced) has run there."""
    folder = tmp_path_factory.mktemp("readme") / "kerasbert"
    folder.mkdir()
    for name in ("Makefile", "train.py", "export.py"):
        os.symlink(ROOT / name, folder / name)
    os.symlink(SHARED_DATA.parent, folder.parent / "shared")
    venv = os.path.dirname(os.path.dirname(sys.executable))
    made = run(["make", "train", f"VENV={venv}", "-o", f"{venv}/.installed", f"ARGS={' '.join(TINY_TRAINING)}"],
               folder)
    assert "fine-tuning for 1 epoch(s)" in made.stdout and "SavedModel for TF Serving" in made.stdout
    assert "\x1b[" not in made.stdout, "output to a pipe has no progress bar escapes"
    return folder


def kerasbert(*arguments):
    return [os.path.join(os.path.dirname(sys.executable), "kerasbert"), *arguments]


def train(*arguments):
    return [sys.executable, "train.py", *arguments, *TINY_TRAINING]


def test_make_train_trains_evaluates_and_exports(readme_project):
    metrics = json.loads((readme_project / "runs" / "latest" / "metrics.json").read_text())
    confusion = metrics["test"]["confusion_matrix"]
    assert metrics["examples"]["test"] == 16 == sum(map(sum, confusion))
    assert metrics["test"]["accuracy"] == (confusion[0][0] + confusion[1][1]) / 16
    assert (readme_project / "saved_models" / "kerasbert" / "1" / "saved_model.pb").is_file()
    assert (readme_project / "saved_models" / "kerasbert" / "tflite" / "1" / "dynamic-int8.tflite").is_file()


TINY_ADAPTATION = "--splits train --max-texts 48 --heldout-texts 16 --max-seq-length 32 --batch-size 8"


def test_make_train_best_runs_the_recipe_and_make_adapt_writes_a_preset_train_py_loads(readme_project,
                                                                                     tiny_hf_preset):
    """`make adapt` and the recipe's options on the preset it wrote. It adapts the tiny random
    backbone: the commands and files are the point here (the real MiniLM's adaptation is measured in
    benchmarks/adaptation.md; its weights written back byte for byte in tests/test_adaptation.py)."""
    venv = os.path.dirname(os.path.dirname(sys.executable))
    make = ["make", f"VENV={venv}", "-o", f"{venv}/.installed",
            f"ADAPT_ARGS={TINY_ADAPTATION} --preset {tiny_hf_preset}"]
    planned = run([*make, "-n", "train-best"], readme_project).stdout.strip().splitlines()
    assert [line.split()[1:3] for line in planned] == [["train.py", "--max-seq-length"], ["export.py", "--run"]], planned
    recipe = planned[0].split()[2:]
    assert recipe == "--max-seq-length 512 --epochs 2 --backbone-dropout 0 --length-warmup 0".split()
    adapted = run([*make, "adapt"], readme_project)
    assert "adapted preset written to adapted/minilm-imdb" in adapted.stdout
    assert (readme_project / "adapted" / "minilm-imdb" / "kerasbert_preset.json").is_file()
    # The recipe's options (but its length, too long for a tiny run) on the adapted preset.
    trained = run(train("--preset", "adapted/minilm-imdb", *recipe[2:], "--output-dir", "runs/best"), readme_project)
    assert "fine-tuning for 2 epoch(s)" in trained.stdout
    config = json.loads((readme_project / "runs/best/config.json").read_text())
    assert (config["backbone_dropout"], config["preset"]) == (0.0, "adapted/minilm-imdb")
    assert (readme_project / "runs/best/metrics.json").is_file()


def test_the_readme_predict_commands(readme_project):
    said = run(kerasbert("predict", "--model", "saved_models/kerasbert/1", "A wonderful film.", "Dreadful."), readme_project)
    assert [line.split("\t")[2] for line in said.stdout.strip().splitlines()[-2:]] == ["A wonderful film.",
                                                                                      "Dreadful."]
    (readme_project / "reviews.csv").write_text("id,text\nr1,A wonderful film.\nr2,Dreadful.\n")
    (readme_project / "reviews.txt").write_text("A wonderful film.\nDreadful.\n")
    run(kerasbert("predict", "--model", "runs/latest/model.keras", "--input", "reviews.csv", "--output",
                  "predictions.jsonl"), readme_project)
    run(kerasbert("predict", "--model", "saved_models/kerasbert/tflite/1/dynamic-int8.tflite", "--input",
                  "reviews.txt", "--output", "p.jsonl"), readme_project)
    for name, tied in (("predictions.jsonl", [(2, "r1"), (3, "r2")]), ("p.jsonl", [(1, None), (2, None)])):
        rows = [json.loads(line) for line in (readme_project / name).read_text().splitlines()]
        assert [(row["line"], row.get("id")) for row in rows] == tied and {row["label"] for row in rows} <= {"neg",
                                                                                                             "pos"}


def test_tensorboard_reads_the_runs(readme_project):
    inspected = run([os.path.join(os.path.dirname(sys.executable), "tensorboard"), "--logdir", "runs", "--inspect"],
                    readme_project)
    assert "batch_loss" in inspected.stdout and "epoch_accuracy" in inspected.stdout


def test_tensorboard_shows_each_run_once(readme_project):
    """As a browser sees it: TensorBoard's default loader follows links, and runs/latest is one."""
    newest = os.path.basename(os.path.dirname(os.path.realpath(readme_project / "runs" / "latest" / "config.json")))
    server = TensorBoardServer(str(readme_project / "runs"), load_fast="auto")
    try:
        runs = server.wait_for("/data/runs", lambda names: f"{newest}/logs/test" in names)
        time.sleep(3)  # a link, if followed, is listed in the same scan
        runs = server.get("/data/runs")
    finally:
        server.stop()
    assert {f"{newest}/logs{part}" for part in ("", "/train", "/validation", "/test")} <= set(runs)
    assert not [name for name in runs if name.startswith("latest")] and len(runs) == len(set(runs))


@pytest.mark.parametrize("options", [["--dataset", "../shared/data/aclImdb_v1_labeled.tar.gz"],
                                     ["--train-file", "reviews-train.csv", "--test-file", "reviews-test.csv"],
                                     ["--strategy", "mirrored"],
                                     ["--mixed-precision", "fp16", "--jit-compile"]],
                         ids=["aclImdb tarball", "CSV files", "mirrored", "fp16 and XLA"])
def test_the_readme_training_variants_finish(readme_project, tiny_backbone, options):
    """Each variant's own code path to the end; on the tiny random backbone, as what differs is the
    job around the model (the real weights run in `make train` above)."""
    reviews = "text,label\n" + "".join(f"{text},{label}\n" for text, label in [("A wonderful film.", "pos"),
                                                                             ("Dreadful.", "neg")] * 12)
    for name in ("reviews-train.csv", "reviews-test.csv"):
        (readme_project / name).write_text(reviews)
    output = readme_project / "runs" / "-".join(part.strip("-").replace("/", "_") for part in options)
    finished = run(train(*options, *tiny_backbone, "--output-dir", str(output)), readme_project)
    assert "test metrics" in finished.stdout and (output / "metrics.json").is_file()


@pytest.mark.parametrize("options, message", [
    (["--preset", "bert_base_en_uncased"], "bert_base_en_uncased"),
    (["--preset", "hf://google-bert/bert-base-uncased"], "hf://google-bert/bert-base-uncased"),
    (["--strategy", "tpu"], "TPU"),
])
def test_readme_commands_this_machine_cannot_finish_end_in_one_line(readme_project, options, message):
    ended = run(train(*options, "--output-dir", str(readme_project / "runs" / "unfinishable")), readme_project, check=False)
    errors = [line for line in ended.stderr.splitlines() if line.startswith("error: ")]
    assert ended.returncode == 2 and len(errors) == 1 and message in errors[0], ended.stderr[-3000:]
    assert "Traceback" not in ended.stderr
    assert not (readme_project / "runs" / "unfinishable").exists()


def test_the_readme_is_for_users_short_and_without_commit_hashes():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 400
    assert not re.findall(r"\bcommit [0-9a-f]{7,}\b|\b[0-9a-f]{7}\b(?=[),;])", text)
    assert "benchmarks/RESULTS.md" in text  # where the history went


def test_the_readme_script_is_the_example_that_runs():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    example = (ROOT / "examples" / "fit_imdb.py").read_text()
    script = next(block for block in blocks if "from_preset" in block)
    assert [line for line in script.splitlines() if line.strip() and line not in example] == []
