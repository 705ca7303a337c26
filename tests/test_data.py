import json
import os

import numpy as np
import pytest
import tensorflow as tf

from kerasbert import data
from kerasbert.errors import KerasbertError
from kerasbert.splits import load_splits
from kerasbert.job import cli
from kerasbert.preprocessing import LengthWarmup, ReviewPreprocessor
from kerasbert.texts import read_acl_imdb, read_table
from tests.conftest import ACL_IMDB_TARBALL, TFDS_DIR


@pytest.fixture(scope="module")
def tfds_splits():
    return load_splits(data_dir=str(TFDS_DIR), max_train_examples=60, max_test_examples=30)


def test_tfds_imdb_gives_seeded_disjoint_train_and_validation(tfds_splits):
    assert (len(tfds_splits.train), len(tfds_splits.validation), len(tfds_splits.test)) == (54, 6, 30)
    assert tfds_splits.class_names == ["neg", "pos"]
    assert set(tfds_splits.train.texts).isdisjoint(tfds_splits.validation.texts)
    assert set(np.unique(tfds_splits.test.labels)) <= {0, 1}
    again = load_splits(data_dir=str(TFDS_DIR), max_train_examples=60, max_test_examples=30)
    assert list(again.validation.texts) == list(tfds_splits.validation.texts)
    other_seed = load_splits(data_dir=str(TFDS_DIR), max_train_examples=60, max_test_examples=30, seed=7)
    assert list(other_seed.validation.texts) != list(tfds_splits.validation.texts)


def test_validation_comes_from_train_and_test_stays_apart():
    full = load_splits(data_dir=str(TFDS_DIR))
    assert (len(full.train), len(full.validation), len(full.test)) == (22500, 2500, 25000)
    train_text, test_text = data.read_tfds("imdb_reviews", str(TFDS_DIR))[:2]
    assert sorted(full.train.texts.tolist() + full.validation.texts.tolist()) == sorted(train_text.texts.tolist())
    assert sorted(full.test.texts.tolist()) == sorted(test_text.texts.tolist())


def test_acl_imdb_tarball_and_folder_read_the_same_reviews(small_acl_imdb):
    train, test = read_acl_imdb(small_acl_imdb)
    assert (len(train), len(test)) == (20, 10)
    assert list(train.labels) == [0] * 10 + [1] * 10
    tar_train, tar_test = read_acl_imdb(str(ACL_IMDB_TARBALL))
    assert (len(tar_train), len(tar_test)) == (25000, 25000)
    assert set(train.texts) <= set(tar_train.texts)
    tfds_train = data.read_tfds("imdb_reviews", str(TFDS_DIR))[0]
    assert sorted(tar_train.texts.tolist()) == sorted(tfds_train.texts.tolist())


def write_csv(path, rows, header="text,label"):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header.split(","))
        writer.writerows(rows)
    return str(path)


def test_csv_with_three_named_classes(tmp_path, real_reviews):
    names = ["bad", "good", "meh"]
    rows = [(text, names[i % 3]) for i, (text, _) in enumerate(real_reviews)]
    texts, class_names = read_table(write_csv(tmp_path / "train.csv", rows))
    assert class_names == ["bad", "good", "meh"]
    assert list(texts.labels[:4]) == [0, 1, 2, 0]
    assert texts.texts[0] == real_reviews[0][0]


def test_jsonl_with_integer_labels(tmp_path, real_reviews):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "label": 1 + (label == "pos") * 4})
                              for t, label in real_reviews) + "\n")
    texts, class_names = read_table(str(path))
    assert class_names == ["1", "5"]
    assert set(texts.labels) == {0, 1}


def test_csv_train_and_test_files_train_a_three_class_split(tmp_path, real_reviews):
    rows = [(text, ["bad", "good", "meh"][i % 3]) for i, (text, _) in enumerate(real_reviews)]
    splits = load_splits(train_file=write_csv(tmp_path / "train.csv", rows[:30]),
                              test_file=write_csv(tmp_path / "test.csv", rows[30:]), validation_split=0.2)
    assert splits.class_names == ["bad", "good", "meh"]
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (24, 6, 10)


@pytest.mark.parametrize("content, message", [
    ("review,label\nnice,1\n", "missing column(s) text"),
    ("text,label\nnice,0.5\n", "line 2 has label '0.5', which is not an integer or a class name"),
    ("text,label\nnice,\n", "line 2 has label '', which is not an integer or a class name"),
    ("text,label\nnice,1\nawful,pos\n", "labels mix integers"),
    ("text,label\nnice,1\n,0\n", "line 3 has an empty text"),
    ("text,label\n", "holds no examples"),
    ("", "missing column(s) label, text"),
])
def test_bad_csv_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(KerasbertError) as error:
        read_table(str(path))
    assert message in str(error.value)


def test_non_utf8_text_names_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ngood,1\nna\xefve caf\xe9,0\n".encode("latin-1"))
    with pytest.raises(KerasbertError, match="line 3 is not valid UTF-8"):
        read_table(str(path))


@pytest.mark.parametrize("line, message", [
    ('{"text": "x", "label": null}', "which is not an integer or a class name"),
    ('{"text": "x", "label": true}', "which is not an integer or a class name"),
    ('{"text": "x"}', "needs an object with text and label"),
    ('{"text": "x", "label": 1', "is not valid JSON"),
])
def test_bad_jsonl_lines(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine", "label": 0}\n' + line + "\n")
    with pytest.raises(KerasbertError, match=f"line 2 .*{message}|line 2 {message}"):
        read_table(str(path))


def test_test_labels_must_be_training_classes(tmp_path):
    train = write_csv(tmp_path / "train.csv", [("good", "pos"), ("bad", "neg")])
    test = write_csv(tmp_path / "test.csv", [("so so", "neutral")])
    with pytest.raises(KerasbertError, match="label 'neutral', which is not one of the classes neg, pos"):
        load_splits(train_file=train, test_file=test)


def test_missing_or_empty_data_dir_and_missing_split(tmp_path):
    with pytest.raises(KerasbertError, match="does not exist"):
        data.read_tfds("imdb_reviews", str(tmp_path / "nowhere"))
    with pytest.raises(KerasbertError, match="no prepared imdb_reviews"):
        data.read_tfds("imdb_reviews", str(tmp_path))
    version = "imdb_reviews/plain_text/1.0.0"
    copy = tmp_path / "tfds" / version
    copy.mkdir(parents=True)
    for name in ("features.json", "label.labels.txt", "imdb_reviews-train.tfrecord-00000-of-00001"):
        os.symlink(TFDS_DIR / version / name, copy / name)
    info = json.loads((TFDS_DIR / version / "dataset_info.json").read_text())
    info["splits"] = [split for split in info["splits"] if split["name"] == "train"]
    (copy / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(KerasbertError, match="has no 'test' split"):
        data.read_tfds("imdb_reviews", str(tmp_path / "tfds"))


def test_bad_data_through_the_cli_keeps_the_output_dir(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("an earlier run's")
    code = cli.main(["train", "--data-dir", str(tmp_path / "nowhere"), "--output-dir", str(out), "--overwrite"])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: data directory")
    assert (out / "metrics.json").read_text() == "an earlier run's"


def test_acl_imdb_folder_without_reviews(tmp_path):
    (tmp_path / "train" / "pos").mkdir(parents=True)
    with pytest.raises(KerasbertError, match="no train/neg/\\*.txt reviews"):
        read_acl_imdb(str(tmp_path))


def test_pipeline_feeds_int32_batches_trimmed_to_the_longest_review(preset_path, tfds_splits):
    preprocessor = ReviewPreprocessor.from_preset(preset_path, sequence_length=128)
    dataset = data.training_dataset(tfds_splits.train, preprocessor, batch_size=8, seed=1)
    assert dataset.cardinality().numpy() == 7
    batches = list(dataset)
    assert sum(len(labels) for _, labels in batches) == 54
    for features, labels in batches:
        assert {value.dtype for value in features.values()} == {tf.int32}
        width = features["token_ids"].shape[1]
        longest = int(tf.reduce_max(tf.reduce_sum(features["padding_mask"], axis=1)))
        assert width % data.PAD_TO_MULTIPLE_OF == 0 or width == 128
        assert longest <= width < longest + data.PAD_TO_MULTIPLE_OF


def test_each_pass_is_the_next_epoch_in_an_order_fixed_by_seed_and_epoch(preset_path, tfds_splits):
    preprocessor = ReviewPreprocessor.from_preset(preset_path, sequence_length=64)

    def passes(count, seed=1, **options):
        dataset = data.training_dataset(tfds_splits.train, preprocessor, batch_size=8, seed=seed, **options)
        return [[labels.numpy().tolist() for _, labels in dataset] for _ in range(count)]

    epochs = passes(3)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2], "fit(epochs=N) sees a new order every epoch"
    assert sorted(sum(epochs[0], [])) == sorted(sum(epochs[2], [])), "every epoch holds every example once"
    assert passes(3) == epochs, "same seed, same orders: a rerun is reproducible"
    assert passes(1, seed=2) != epochs[:1]
    assert passes(2, first_epoch=1) == epochs[1:], "epoch k's order does not depend on the passes before it"
    assert passes(2, first_epoch=1, skip_batches=3) == [epochs[1][3:], epochs[2][3:]], "the rest of epochs 1, 2"
    skipped = data.training_dataset(tfds_splits.train, preprocessor, batch_size=8, seed=1, skip_batches=3)
    assert skipped.cardinality().numpy() == 4
    for global_seed in (0, 5):  # a global seed of 0 once crashed the seeded shuffle (`--seed 0`)
        tf.random.set_seed(global_seed)
        assert passes(3) == epochs, "the order depends on (seed, epoch) alone, not on TensorFlow's global seed"
    assert passes(1, seed=0) != epochs[:1]


def test_a_length_warmup_tokenizes_the_runs_first_steps_shorter(preset_path, tfds_splits):
    preprocessor = ReviewPreprocessor.from_preset(preset_path, sequence_length=128)
    warmup = LengthWarmup.of_run(length=32, fraction=0.5, epochs=2, steps_per_epoch=7)  # the first 7 steps

    def widths(first_epoch=0, skip_batches=0, **options):
        dataset = data.training_dataset(tfds_splits.train, preprocessor, batch_size=8, seed=1,
                                        first_epoch=first_epoch, skip_batches=skip_batches, **options)
        return [[features["token_ids"].shape[1] for features, _ in dataset] for _ in range(2 - first_epoch)]

    plain, warmed = widths(), widths(length_warmup=warmup)
    assert max(warmed[0]) <= 32 < max(plain[0]), "epoch 0 is the warm-up: every batch at most 32 tokens"
    assert warmed[1] == plain[1], "epoch 1 is at the full length, as without a warm-up"
    assert widths(first_epoch=0, skip_batches=3, length_warmup=warmup)[0] == warmed[0][3:], "resumed mid-warm-up"
    assert widths(first_epoch=1, length_warmup=warmup) == warmed[1:], "resumed after it"

    def labels(**options):
        return [y.numpy().tolist() for _, y in data.training_dataset(tfds_splits.train, preprocessor, 8, 1, **options)]
    assert labels(length_warmup=warmup) == labels(), "the same batches in the same order"


def test_a_short_sequence_is_the_same_truncation_of_the_review(preset_path, tfds_splits):
    long = ReviewPreprocessor.from_preset(preset_path, sequence_length=256, truncation="head+tail")
    short = ReviewPreprocessor.from_preset(preset_path, sequence_length=64, truncation="head+tail")
    texts = tf.constant(list(tfds_splits.train.texts[:8]))
    for name, value in short.tokenize_and_pack(texts).items():
        np.testing.assert_array_equal(long.tokenize_and_pack(texts, 64)[name].numpy(), value.numpy(), err_msg=name)


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_a_length_warmup_fraction_is_a_fraction(fraction):
    with pytest.raises(ValueError, match="fraction of the steps must be in"):
        LengthWarmup.of_run(64, fraction, epochs=1, steps_per_epoch=10)


def test_length_bucketing_puts_reviews_of_similar_length_in_a_batch(preset_path, tfds_splits):
    preprocessor = ReviewPreprocessor.from_preset(preset_path, sequence_length=512)

    def spread(length_bucketing):
        dataset = data.training_dataset(tfds_splits.train, preprocessor, batch_size=8, seed=1,
                                        length_bucketing=length_bucketing)
        lengths = [tf.reduce_sum(features["padding_mask"], axis=1).numpy() for features, _ in dataset]
        return np.mean([batch.max() - batch.min() for batch in lengths])

    assert spread(True) < 0.3 * spread(False)


def test_evaluation_pipeline_keeps_the_order(preset_path, tfds_splits):
    preprocessor = ReviewPreprocessor.from_preset(preset_path, sequence_length=64)
    ordered = tfds_splits.test.sorted_by_length()
    labels = np.concatenate([y.numpy() for _, y in data.evaluation_dataset(ordered, preprocessor, 8)])
    np.testing.assert_array_equal(labels, ordered.labels)
    lengths = [len(text) for text in ordered.texts]
    assert lengths == sorted(lengths)


def test_pipelines_run_without_tf_data_autotuning(preset_path, tfds_splits):
    # TF 2.21's autotuning thread can hold up the end of every fit, evaluate and predict,
    # for up to a minute (data.pipeline_options, benchmarks/iterator_teardown.md).
    preprocessor = ReviewPreprocessor.from_preset(preset_path, sequence_length=64)
    pipelines = [data.training_dataset(tfds_splits.train, preprocessor, batch_size=8, seed=1),
                 data.evaluation_dataset(tfds_splits.test, preprocessor, 8)]
    for dataset in pipelines:
        assert dataset.options().autotune.enabled is False
        assert dataset.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
        assert sum(len(labels) for _, labels in dataset) > 0


@pytest.mark.parametrize("name, content, expected", [
    ("blank.txt", "first\n\n  \nsecond\r\n", [(1, None, "first"), (2, None, ""), (3, None, "  "), (4, None, "second")]),
    ("feeds.txt", "a\fb\nc", [(1, None, "a\fb"), (2, None, "c")]),
    ("upper.CSV", "\ufefftext,id\n\"a, b\",7\nc,8\n", [(2, "7", "a, b"), (3, "8", "c")]),
    ("tabs.tsv", "id\ttext\nx\tone\n", [(2, "x", "one")]),
    ("separators.jsonl", '{"text": "a\u2028b\u0085c"}\n\n{"text": "d", "id": 3}\n',
     [(1, None, "a\u2028b\u0085c"), (3, 3, "d")]),
    ("huge.csv", "text\n" + "x" * 200_000 + "\n", [(2, None, "x" * 200_000)]),
])
def test_predict_input_keeps_each_text_tied_to_its_line(tmp_path, name, content, expected):
    from kerasbert.deploy.predict import InputTexts

    (tmp_path / name).write_bytes(content.encode("utf-8"))
    assert list(InputTexts(str(tmp_path / name))) == expected


@pytest.mark.parametrize("name, content, message", [
    ("short.csv", "id,text\n1\n", "line 2 has fewer fields than the header"),
    ("reviews.json", '["not", "lines"]\n', "line 1 needs an object with text"),
    ("reviews.html", "<p>hi</p>", "unknown file type"),
    ("empty.txt", "\n\n", "holds no texts"),
])
def test_predict_input_that_cannot_be_matched_to_rows_is_refused(tmp_path, name, content, message):
    from kerasbert.deploy.predict import InputTexts

    (tmp_path / name).write_text(content)
    with pytest.raises(KerasbertError, match=message):
        InputTexts(str(tmp_path / name))


def test_apple_double_files_are_not_reviews(small_acl_imdb, tmp_path):
    import shutil

    copy = tmp_path / "aclImdb"
    shutil.copytree(small_acl_imdb, copy)
    (copy / "train" / "pos" / "._0_9.txt").write_bytes(b"\x00\x05\x16\x07 resource fork")
    train, _ = read_acl_imdb(str(copy))
    assert len(train) == 20


def test_a_damaged_tfds_shard_is_named_not_a_traceback(tmp_path):
    """The train shard cut off mid-record, as a broken copy or download leaves it."""
    for source_dir, _, names in os.walk(TFDS_DIR):
        target_dir = tmp_path / os.path.relpath(source_dir, TFDS_DIR)
        target_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            source = os.path.join(source_dir, name)
            if "-train.tfrecord" in name:
                with open(source, "rb") as shard:
                    (target_dir / name).write_bytes(shard.read(1 << 20))
            else:
                os.symlink(source, target_dir / name)
    with pytest.raises(KerasbertError, match=r"imdb_reviews in .* cannot be read \(.*\); prepare it again"):
        data.read_tfds("imdb_reviews", str(tmp_path))


def test_a_changed_review_inside_a_gzip_tarball_fails_its_crc(tmp_path):
    """Stored (uncompressed) deflate blocks: a flipped bit in a review decodes fine and leaves
    the tar headers intact, so only the gzip CRC at the end of the stream can catch it."""
    import gzip
    import io
    import itertools
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for split, label in itertools.product(("train", "test"), ("neg", "pos")):
            text = f"An unmistakable {split} {label} review.".encode()
            member = tarfile.TarInfo(f"aclImdb/{split}/{label}/0_5.txt")
            member.size = len(text)
            archive.addfile(member, io.BytesIO(text))
    content = bytearray(gzip.compress(buffer.getvalue(), compresslevel=0))
    good = tmp_path / "good.tar.gz"
    good.write_bytes(bytes(content))
    assert read_acl_imdb(str(good))[0].texts.tolist() == ["An unmistakable train neg review.",
                                                          "An unmistakable train pos review."]
    content[content.index(b"unmistakable test pos")] ^= 0x01  # "unmistakable" -> "tnmistakable"
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(bytes(content))
    with pytest.raises(KerasbertError, match="damaged.tar.gz is not a readable aclImdb .*CRC"):
        read_acl_imdb(str(damaged))
