"""Streamed labeled texts (`kerasbert.streaming`): every file layout reads back the rows written,
labels map to class indices in the graph, the validation split is stable, and a classifier
fits on streamed batches; the synthetic set generator's shards stream back whole."""

import csv
import gzip
import json
import os
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import kerasbert
from kerasbert import streaming
from kerasbert.errors import KerasbertError
from kerasbert.preprocessing import LengthWarmup, preprocessor_from_vocabulary
from kerasbert.streaming import count_rows, split_by_text_hash, stream_labeled_texts, stream_rows, streamed_batches
from tests.conftest import ROOT, TFDS_DIR

WORDS = ["good", "great", "fun", "bad", "awful", "dull", "film", "plot", "cast", "music"]
ROWS = [('a "fine", fine\nfilm', "pos"), ("dull\tplot", "neg"), ("great fun", "pos"), ("awful cast", "neg")]


def read_back(source, class_names=("neg", "pos"), **columns):
    return [(text.decode(), int(label)) for text, label in
            stream_labeled_texts(str(source), list(class_names), **columns).as_numpy_iterator()]


def expected(rows=ROWS):
    return [(text, 0 if label == "neg" else 1) for text, label in rows]


def write_table(path, rows, delimiter=",", header=("text", "label")):
    opened = gzip.open(path, "wt", newline="") if str(path).endswith(".gz") else open(path, "w", newline="")
    with opened as file:
        writer = csv.writer(file, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(row if header[0] == "text" else row[::-1] for row in rows)


def test_csv_tsv_and_gzipped_jsonl_shards_read_back_the_rows_written(tmp_path, monkeypatch):
    write_table(tmp_path / "reviews.csv", ROWS)
    assert read_back(tmp_path / "reviews.csv") == expected(), "quotes, commas, tabs and newlines inside a field"
    write_table(tmp_path / "swapped.tsv.gz", ROWS, delimiter="\t", header=("label", "text"))
    assert read_back(tmp_path / "swapped.tsv.gz") == expected(), "columns found by name, in any order"
    shards = tmp_path / "shards"
    shards.mkdir()
    for index in range(2):
        with gzip.open(shards / f"part-{index}.jsonl.gz", "wt") as file:
            file.writelines(json.dumps({"review": text, "stars": label, "id": 7}) + "\n" for text, label in ROWS[index::2])
    streamed = read_back(shards, text_column="review", label_column="stars")
    assert streamed == expected(ROWS[0::2] + ROWS[1::2]), "a block of each file in turn, in name order"
    monkeypatch.setattr(streaming, "BLOCK", 1)
    assert read_back(shards, text_column="review", label_column="stars") == expected(ROWS), "a file per class mixes"
    assert read_back(str(shards / "part-1*"), text_column="review", label_column="stars") == expected(ROWS[1::2])


def test_the_files_come_in_an_order_drawn_from_seed_and_epoch(tmp_path):
    for index in range(6):
        write_table(tmp_path / f"part-{index}.csv", [(f"review {index}", "pos")])

    def texts(order):
        return tuple(text.decode() for text, _ in stream_rows(str(tmp_path), order=order).as_numpy_iterator())

    orders = {texts((3, epoch)) for epoch in range(4)}
    assert len(orders) > 1 and {tuple(sorted(order)) for order in orders} == {texts(None)}
    assert texts((3, 1)) == texts((3, 1)) and texts(None) == tuple(f"review {index}" for index in range(6))


def test_bad_sources_and_labels_are_refused_in_one_line(tmp_path):
    with pytest.raises(KerasbertError, match="names no data file"):
        stream_labeled_texts(str(tmp_path / "nothing-*.csv"), ["neg", "pos"])
    write_table(tmp_path / "reviews.csv", ROWS, header=("body", "label"))
    with pytest.raises(KerasbertError, match=r"reviews.csv: the header has no column 'text' \(it has body, label\)"):
        stream_labeled_texts(str(tmp_path / "reviews.csv"), ["neg", "pos"])
    write_table(tmp_path / "stars.csv", [("fine", "pos"), ("meh", "3 stars")])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"not one of the class names \(neg, pos\)"):
        read_back(tmp_path / "stars.csv")


def test_the_validation_split_is_stable_and_disjoint(tmp_path):
    rows = [(f"review number {index} " + WORDS[index % 10], "pos" if index % 2 else "neg") for index in range(1000)]
    write_table(tmp_path / "reviews.csv", rows)
    streamed = stream_labeled_texts(str(tmp_path / "reviews.csv"), ["neg", "pos"])
    train, validation = split_by_text_hash(streamed, 0.2)
    held_out = {text for text, _ in validation.as_numpy_iterator()}
    trained = {text for text, _ in train.as_numpy_iterator()}
    assert not held_out & trained and len(held_out | trained) == 1000 and 150 < len(held_out) < 250
    again = {text for text, _ in split_by_text_hash(stream_labeled_texts(str(tmp_path / "reviews.csv"), ["neg", "pos"]),
                                                    0.2)[1].as_numpy_iterator()}
    assert again == held_out and int(count_rows(validation)) == len(held_out)


def test_a_classifier_fits_on_streamed_batches_in_a_new_seeded_order_each_epoch(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    rng = np.random.default_rng(0)
    rows = [(" ".join(rng.choice(WORDS[:3] if index % 2 else WORDS[3:6], int(rng.integers(1, 40)))),
             "pos" if index % 2 else "neg") for index in range(96)]
    write_table(tmp_path / "reviews.csv", rows)
    preprocessor = preprocessor_from_vocabulary(str(tmp_path / "vocab.txt"), 64, "head")
    streamed = stream_labeled_texts(str(tmp_path / "reviews.csv"), ["neg", "pos"])
    batches = streamed_batches(streamed, preprocessor, batch_size=8, seed=3, shuffle_buffer=32)

    def epoch_order(dataset):
        return [tuple(features["token_ids"][:, 1].numpy()) + tuple(labels.numpy()) for features, labels in dataset]

    first, second = epoch_order(batches), epoch_order(batches)
    assert first != second, "reshuffled every epoch"
    assert first == epoch_order(streamed_batches(streamed, preprocessor, batch_size=8, seed=3, shuffle_buffer=32))
    seed_zero = epoch_order(streamed_batches(streamed, preprocessor, batch_size=8, seed=0, shuffle_buffer=32))
    assert seed_zero != first and len(seed_zero) == len(first)  # 0 is a seed like any other
    widths = [features["token_ids"].shape[1] for features, _ in batches]
    assert sum(features["token_ids"].shape[0] for features, _ in batches) == 96 and min(widths) < max(widths)
    warmup = LengthWarmup.of_run(16, fraction=0.25, epochs=2, steps_per_epoch=len(widths))
    warmed = streamed_batches(streamed, preprocessor, batch_size=8, seed=3, shuffle_buffer=32, length_warmup=warmup)
    epoch_0, epoch_1 = list(warmed), list(warmed)
    assert epoch_order(epoch_0) == first and epoch_order(epoch_1) == second, "the same rows, first tokens kept ('head')"
    assert max(features["token_ids"].shape[1] for features, _ in epoch_0[:warmup.steps]) <= 16 < max(widths)
    plain_epoch_1 = streamed_batches(streamed, preprocessor, batch_size=8, seed=3, shuffle_buffer=32, first_epoch=1)
    assert [x["token_ids"].shape[1] for x, _ in epoch_1] == [x["token_ids"].shape[1] for x, _ in plain_epoch_1]
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(WORDS) + 5, num_layers=1, num_heads=2, hidden_dim=8,
                                             intermediate_dim=16, max_sequence_length=64)
    keras.utils.set_random_seed(0)
    classifier = kerasbert.TextClassifier(backbone, preprocessor=preprocessor, class_names=["neg", "pos"])
    classifier.compile(optimizer=kerasbert.adamw_with_warmup(1e-2, total_steps=4 * 16, warmup_ratio=0.0))
    history = classifier.fit(batches, epochs=4, verbose=0).history
    assert history["loss"][-1] < history["loss"][0] and history["accuracy"][-1] > 0.8, history


def test_the_synthetic_set_generator_writes_shards_that_stream_back(tmp_path):
    folder = tmp_path / "synthetic"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "synthetic_reviews.py"), "--rows", "3000",
                             "--shards", "3", "--format", "jsonl", "--gzip", "--length-scale", "0.4", "--output",
                             str(folder), "--data-dir", str(TFDS_DIR)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(os.listdir(folder)) == [f"reviews-{index:05d}-of-00003.jsonl.gz" for index in range(3)]
    rows = read_back(folder)
    labels = np.array([label for _, label in rows])
    assert len(rows) == 3000 and 1300 < labels.sum() < 1700 and len({text for text, _ in rows}) == 3000
