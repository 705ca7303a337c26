"""Bad input across every command: one line, `error: ...`, exit status 2, and nothing
that existed before is changed (every file's bytes and every folder are compared).

Each case runs `kerasbert <command> ...` in-process in a workspace of prepared
files: runs, models, inputs and presets that are wrong in one way each.
"""

import gzip
import io
import json
import os
import tarfile

import keras
import keras_hub
import numpy as np
import pytest

from kerasbert.job import cli
from kerasbert.job.config import TrainConfig

CASES = [
    # train: options
    ("train", "--epochs 0", "--epochs must be a positive integer"),
    ("train", "--learning-rate nan", "--learning-rate must be a finite number"),
    ("train", "--clip-norm inf", "--clip-norm must be a finite number"),
    ("train", "--seed -1", "--seed must be in [0, 2**31)"),
    ("train", "--seed 2147483648", "--seed must be in [0, 2**31)"),
    ("train", "--max-seq 48", "unrecognized arguments: --max-seq"),
    ("train", "--batch-size many", "--batch-size: invalid int value"),
    ("train", "--validation-split 1", "--validation-split must be in [0, 1)"),
    ("train", "--mixed-precision fp8", "--mixed-precision: invalid choice"),
    ("train", "--length-warmup 256", "--length-warmup must be -1, 0 or from 3 to under --max-seq-length, got 256"),
    ("train", "--length-warmup-fraction 1.5", "--length-warmup-fraction must be in [0, 1)"),
    ("train", "--config missing.json", "--config missing.json: No such file or directory"),
    ("train", "--config broken.json", "--config broken.json is not valid JSON"),
    ("train", "--config list.json", "--config list.json must hold one JSON object of options"),
    ("train", "--config typed.json", "epochs"),
    ("train", "--config unknown.json", "unknown config fields: colour"),
    # train: directories
    ("train", "--output-dir finished", "exists and is not empty (pass --overwrite"),
    ("train", "--output-dir . --overwrite", "replaces only a kerasbert run directory"),
    ("train", "--output-dir notes.txt", "output directory notes.txt exists and is not a directory"),
    ("train", "--output-dir notes.txt/run", "is not writable"),
    ("train", "--output-dir interrupted --resume --epochs 3", "its config differs in --epochs (run: 2, now: 3)"),
    ("train", "--output-dir empty --resume", "--resume: empty has no backup to resume from"),
    ("train", "--output-dir finished --resume", "--resume: finished has no backup to resume from"),
    # train: presets and data
    ("train", "--preset bert_huge_xx", "unknown preset 'bert_huge_xx'"),
    ("train", "--preset hf_pytorch_only --output-dir new", "pytorch_model.bin is not read by KerasHub"),
    ("train", "--preset hf_truncated --output-dir new", "bytes where its header describes"),
    ("train", "--preset hf_no_tokenizer_config --output-dir new", "has no tokenizer config"),
    ("train", "--data-dir nowhere --output-dir new", "data directory nowhere does not exist"),
    ("train", "--dataset corrupt.tar.gz --output-dir new", "corrupt.tar.gz is not a readable aclImdb"),
    ("train", "--dataset no_such.tar.gz --output-dir new", "dataset path no_such.tar.gz does not exist"),
    ("train", "--train-file short_train.csv --test-file reviews.csv --output-dir new", "line 3"),
    ("train", "--train-file reviews.xml --test-file reviews.csv --output-dir new", "reviews.xml"),
    # export
    ("export", "--run nowhere", "run directory nowhere does not exist"),
    ("export", "--run empty", "cannot export empty: it is not a kerasbert run directory (no config.json)"),
    ("export", "--run finished --model-name ..", "--model-name"),
    ("export", "--run finished --model-name a/b", "--model-name"),
    ("export", "--run finished --export-root notes.txt", "is not writable"),
    ("export", "--run finished --export-root exports --version 1", "exports/kerasbert/1 already exists"),
    ("export", "--run finished --tflite bogus", "bogus"),
    ("export", "--run finished --parity-examples -1", "--parity-examples"),
    ("export", "--run finished --serving-precision fp8", "--serving-precision: invalid choice"),
    ("export", "--run finished --version -2", "--version must not be negative"),
    # predict
    ("predict", "--model finished/model.keras", "give either texts or --input"),
    ("predict", "--model finished/model.keras --input reviews.csv a-text", "give either texts or --input"),
    ("predict", "--model finished/model.keras --batch-size 0 a-text", "--batch-size must be a positive integer"),
    ("predict", "--model missing.keras a-text", "missing.keras"),
    ("predict", "--model plain.keras a-text", "holds a Sequential, not a text classifier"),
    ("predict", "--model untokenized.keras a-text", "holds a classifier without its tokenizer"),
    ("predict", "--model garbage.tflite a-text", "garbage.tflite"),
    ("predict", "--model finished --input reviews.csv", "finished"),
    ("predict", "--model finished/model.keras --input reviews.xml", "reviews.xml"),
    ("predict", "--model finished/model.keras --input short.csv", "line 3"),
    ("predict", "--model finished/model.keras --input bad.txt", "not valid UTF-8"),
    ("predict", "--model finished/model.keras --input missing.txt", "missing.txt"),
    ("predict", "--model finished/model.keras --input reviews.csv --output reviews.csv", "is the input file"),
    # report
    ("report", "nowhere", "run directory nowhere does not exist"),
    ("report", "empty", "cannot report on empty: it is not a kerasbert run directory"),
    ("report", "no_metrics", "cannot report on no_metrics: it has no test metrics"),
    ("report", "broken_metrics", "broken_metrics/metrics.json is corrupt"),
    # adapt
    ("adapt", "--splits unsupervised,test", "--splits must not include test"),
    ("adapt", "--mask-rate 0", "--mask-rate must be in (0, 1)"),
    ("adapt", "--max-texts -1", "--max-texts must not be negative"),
    ("adapt", "--output adapted", "adapted holds an adapted preset already (train with --preset adapted"),
    ("adapt", "--output notes.txt", "--output folder notes.txt exists and is not a directory"),
    ("adapt", "--preset bert_huge_xx --output new-preset", "unknown preset 'bert_huge_xx'"),
    ("adapt", "--preset hf_truncated --output new-preset", "bytes where its header describes"),
    ("adapt", "--data-dir nowhere --output new-preset", "data directory nowhere does not exist"),
    # the command itself
    ("nonsense", "", "unknown command 'nonsense'"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, preset_folder):
    """Files that are wrong in one way each, beside one finished (fake) run."""
    root = tmp_path_factory.mktemp("bad-input")
    write = lambda name, content: write_file(root / name, content)  # noqa: E731
    write("finished/metrics.json", json.dumps({"class_names": ["neg", "pos"], "test": {"accuracy": 0.5}}))
    write("finished/model.keras", b"a kerasbert model would be here")
    TrainConfig().save(str(root / "finished" / "config.json"))
    write("interrupted/backup/state.json", "{}")
    TrainConfig(epochs=2).save(str(root / "interrupted" / "config.json"))
    (root / "empty").mkdir()
    write("exports/kerasbert/1/saved_model.pb", b"version 1")
    write("adapted/kerasbert_preset.json", "{}")
    write("notes.txt", "not a folder")
    write("broken.json", "{not json")
    write("list.json", "[1, 2]")
    write("typed.json", json.dumps({"epochs": "2"}))
    write("unknown.json", json.dumps({"colour": "red"}))
    write("reviews.csv", "id,text\n1,a fine film\n2,a dull film\n")
    write("short.csv", "id,text\n1,a fine film\n2\n")
    write("short_train.csv", "text,label\na fine film,pos\na dull film\n")
    write("reviews.xml", "<reviews/>")
    write("bad.txt", b"a fine film\n\xff\xfe\n")
    write("garbage.tflite", b"not a flatbuffer")
    write("no_metrics/config.json", "{}")
    write("broken_metrics/config.json", "{}")
    write("broken_metrics/metrics.json", "{")
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).save(str(root / "plain.keras"))
    tiny_classifier_without_tokenizer().save(str(root / "untokenized.keras"))
    write("corrupt.tar.gz", corrupt_acl_imdb_tarball())
    hugging_face_folder(root / "hf_pytorch_only", preset_folder, weights=None)
    write("hf_pytorch_only/pytorch_model.bin", b"a torch pickle")
    hugging_face_folder(root / "hf_truncated", preset_folder, weights=truncated_safetensors())
    hugging_face_folder(root / "hf_no_tokenizer_config", preset_folder, weights=truncated_safetensors(complete=True),
                        leave_out="tokenizer_config.json")
    return root


@pytest.fixture(scope="module")
def preset_folder():
    from kerasbert.presets import packaged_preset_folder

    return packaged_preset_folder("all_minilm_l6_v2_offline")


def tiny_classifier_without_tokenizer():
    from kerasbert.model import TextClassifier

    backbone = keras_hub.models.BertBackbone(vocabulary_size=16, num_layers=1, num_heads=2, hidden_dim=8,
                                             intermediate_dim=16, max_sequence_length=16)
    return TextClassifier(backbone, class_names=["neg", "pos"])


def write_file(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def hugging_face_folder(folder, preset_folder, weights, leave_out=None):
    folder.mkdir()
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        if name != leave_out:
            os.symlink(os.path.join(preset_folder, name), folder / name)
    if weights is not None:
        (folder / "model.safetensors").write_bytes(weights)


def truncated_safetensors(complete=False):
    """A safetensors file of one 4x4 float32 tensor, cut short unless `complete`."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    data = np.zeros(16, "float32").tobytes()
    return len(header).to_bytes(8, "little") + header + (data if complete else data[:40])


def corrupt_acl_imdb_tarball():
    """An aclImdb tarball of eight reviews with one byte of its compressed stream flipped."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for split in ("train", "test"):
            for label in ("neg", "pos"):
                for index in range(2):
                    text = f"review {index} of {split} {label}, long enough to be worth compressing. " * 20
                    member = tarfile.TarInfo(f"aclImdb/{split}/{label}/{index}_5.txt")
                    member.size = len(text)
                    archive.addfile(member, io.BytesIO(text.encode()))
    compressed = bytearray(gzip.compress(buffer.getvalue()))
    compressed[len(compressed) // 2] ^= 0x10
    return bytes(compressed)


def snapshot(root):
    """Every folder and every file's bytes below `root` (symlinks as their targets' names)."""
    seen = {}
    for folder, folders, names in os.walk(root):
        for name in folders + names:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, root)
            if os.path.islink(path):
                seen[relative] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                seen[relative] = ("folder", None)
            else:
                with open(path, "rb") as file:
                    seen[relative] = ("file", file.read())
    return seen


@pytest.mark.parametrize("command, options, message", CASES, ids=[f"{c} {o}" for c, o, _ in CASES])
def test_bad_input_gives_one_error_line_exit_2_and_changes_nothing(workspace, monkeypatch, capsys, command, options,
                                                                   message):
    monkeypatch.chdir(workspace)
    before = snapshot(workspace)
    status = cli.main([command, *options.split()])
    error = capsys.readouterr().err.strip()
    assert status == 2
    lines = [line for line in error.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], error
    assert "Traceback" not in error
    assert snapshot(workspace) == before


def test_the_table_covers_every_command():
    assert len(CASES) >= 40
    assert {command for command, _, _ in CASES} >= set(cli.COMMANDS)
