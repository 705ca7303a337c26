"""Labeled text from tensorflow-datasets, aclImdb folders and CSV/JSONL files,
and the `tf.data` pipelines that feed it to the model.

Every source is read into a `LabeledTexts` (texts plus integer labels) and the
class names it declares, so a 3-class CSV trains a 3-class head. Tokenization
happens in the `tf.data` pipeline, not in the model: the model receives ready
int32 tensors, which `tf.distribute` can split across replicas, and
tokenizing the next batches overlaps with training on the current one.

Example:

>>> splits = load_splits(TrainConfig(data_dir="../shared/data/tensorflow_datasets",
...                                  max_train_examples=100, max_test_examples=50))
>>> len(splits.train), len(splits.validation), len(splits.test), splits.class_names
(90, 10, 50, ['neg', 'pos'])
"""

import csv
import dataclasses
import functools
import io
import json
import os
import re
import tarfile

import numpy as np
import tensorflow as tf

from kerasbert.errors import KerasbertError

ACL_IMDB_CLASSES = ["neg", "pos"]
# Batches are padded to a multiple of this many tokens, which bounds the number
# of distinct shapes (and so of retraced or XLA-recompiled train steps).
PAD_TO_MULTIPLE_OF = 16
# With length bucketing, reviews are sorted by length inside windows of this
# many batches, so a batch holds reviews of similar length yet the order of
# batches stays random.
BUCKET_WINDOW_BATCHES = 64


@dataclasses.dataclass
class LabeledTexts:
    texts: np.ndarray  # object array of str
    labels: np.ndarray  # int32 class ids

    def __len__(self):
        return len(self.labels)

    def take(self, indices):
        return LabeledTexts(self.texts[indices], self.labels[indices])

    def sample(self, count, seed):
        """A seeded random subset of `count` examples (all if count is 0 or larger)."""
        if not count or count >= len(self):
            return self
        order = np.random.default_rng(seed).permutation(len(self))
        return self.take(np.sort(order[:count]))

    def split(self, fraction, seed):
        """Two disjoint seeded random parts; the second holds `fraction` of the examples."""
        order = np.random.default_rng(seed).permutation(len(self))
        held_out = int(round(len(self) * fraction))
        return self.take(np.sort(order[held_out:])), self.take(np.sort(order[:held_out]))

    def sorted_by_length(self):
        """The same examples, shortest text first (characters predict token counts)."""
        return self.take(np.argsort([len(text) for text in self.texts], kind="stable"))


@dataclasses.dataclass
class Splits:
    train: LabeledTexts
    validation: LabeledTexts
    test: LabeledTexts
    class_names: list


def load_splits(config):
    """Train, validation (carved from train with `config.seed`) and test data."""
    if config.train_file:
        train, class_names = read_table(config.train_file)
        test, _ = read_table(config.test_file, class_names)
    elif looks_like_path(config.dataset):
        train, test = read_acl_imdb(config.dataset)
        class_names = ACL_IMDB_CLASSES
    else:
        train, test, class_names = read_tfds(config.dataset, config.data_dir)
    if len(class_names) < 2:
        raise KerasbertError(f"the training data has only one class ({class_names[0]}); a classifier needs two or more")
    train = train.sample(config.max_train_examples, config.seed)
    train, validation = train.split(config.validation_split, config.seed)
    test = test.sample(config.max_test_examples, config.seed)
    for name, part in (("training", train), ("test", test)):
        if not len(part):
            raise KerasbertError(f"the {name} split is empty")
    return Splits(train, validation, test, list(class_names))


def looks_like_path(dataset):
    return os.sep in dataset or dataset.endswith((".tar.gz", ".tgz")) or os.path.exists(dataset)


# --- tensorflow-datasets ---------------------------------------------------


@functools.lru_cache(maxsize=2)
def read_tfds(name, data_dir):
    """The train and test splits of a prepared tfds dataset; nothing is downloaded.

    Cached: a sweep or a test session reads the same splits many times.
    """
    import tensorflow_datasets as tfds

    if data_dir and not os.path.isdir(data_dir):
        raise KerasbertError(f"data directory {data_dir} does not exist (set --data-dir or TFDS_DATA_DIR)")
    try:
        builder = tfds.builder(name, data_dir=data_dir or None)
    except tfds.core.registered.DatasetNotFoundError:
        raise KerasbertError(f"unknown tensorflow-datasets dataset {name!r}") from None
    if not builder.is_prepared():
        raise KerasbertError(
            f"no prepared {name} in {builder.data_dir} (data directory {data_dir or 'tfds default'}); "
            "prepare it with tfds or point --data-dir at a copy"
        )
    for split in ("train", "test"):
        if split not in builder.info.splits:
            raise KerasbertError(f"{name} in {builder.data_dir} has no {split!r} split")
    if builder.info.supervised_keys is None:
        raise KerasbertError(f"{name} has no supervised (text, label) keys")
    class_names = builder.info.features[builder.info.supervised_keys[1]].names
    train, test = (
        labeled_texts_from(builder.as_dataset(split=split, as_supervised=True, shuffle_files=False))
        for split in ("train", "test")
    )
    return train, test, class_names


def labeled_texts_from(dataset):
    texts, labels = [], []
    for text_batch, label_batch in dataset.batch(4096).with_options(pipeline_options()).as_numpy_iterator():
        texts.extend(text.decode("utf-8") for text in text_batch)
        labels.append(label_batch)
    return LabeledTexts(np.array(texts, dtype=object), np.concatenate(labels).astype("int32"))


# --- Stanford aclImdb layout ----------------------------------------------

ACL_IMDB_FILE = re.compile(r"(?:^|/)(train|test)/(neg|pos)/[^/]+\.txt$")


def read_acl_imdb(path):
    """Train and test reviews of an aclImdb folder or .tar.gz (train/{neg,pos}/*.txt, ...)."""
    if not os.path.exists(path):
        raise KerasbertError(f"dataset path {path} does not exist")
    found = {("train", "neg"): [], ("train", "pos"): [], ("test", "neg"): [], ("test", "pos"): []}
    for name, read in acl_imdb_files(path):
        match = ACL_IMDB_FILE.search(name)
        if match:
            found[match.groups()].append((name, read))
    for (split, label), files in found.items():
        if not files:
            raise KerasbertError(f"{path} has no {split}/{label}/*.txt reviews (expected the aclImdb layout)")
    return tuple(acl_imdb_split(found, split) for split in ("train", "test"))


def acl_imdb_files(path):
    """(name, read) pairs for every file below a folder or inside a tarball."""
    if os.path.isdir(path):
        for root, _, names in os.walk(path):
            for name in names:
                full = os.path.join(root, name)
                yield full.replace(os.sep, "/"), lambda full=full: open(full, "rb").read()
        return
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                if member.isfile():
                    data = archive.extractfile(member).read()
                    yield member.name, lambda data=data: data
    except (tarfile.TarError, OSError, EOFError) as error:
        raise KerasbertError(f"{path} is not a readable aclImdb folder or tarball: {error}") from None


def acl_imdb_split(found, split):
    texts, labels = [], []
    for label, class_name in enumerate(ACL_IMDB_CLASSES):
        for name, read in sorted(found[(split, class_name)]):
            # Strip bytes, not str, as the tfds builder does: it keeps trailing non-ASCII spaces.
            texts.append(decode_text(read().strip(), name))
            labels.append(label)
    return LabeledTexts(np.array(texts, dtype=object), np.array(labels, dtype="int32"))


def decode_text(data, where):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise KerasbertError(f"{where}: line {line} is not valid UTF-8 (byte {error.start})") from None


# --- CSV and JSONL files ---------------------------------------------------

INTEGER = re.compile(r"^[+-]?\d+$")


def read_table(path, class_names=None):
    """Texts and labels of a CSV (`text,label` header) or JSONL file.

    Labels are integers or class names. Without `class_names` (the training
    file), the classes are the sorted distinct labels; with them (the test
    file), every label must be one of them.
    """
    if not os.path.isfile(path):
        raise KerasbertError(f"data file {path} does not exist")
    with open(path, "rb") as file:
        content = decode_text(file.read(), path)
    if path.endswith(".jsonl") or path.endswith(".json"):
        rows = jsonl_rows(content, path)
    elif path.endswith(".csv"):
        rows = csv_rows(content, path)
    else:
        raise KerasbertError(f"{path}: unknown file type (expected .csv or .jsonl)")
    texts, raw_labels = [], []
    for line, text, label in rows:
        if not isinstance(text, str) or not text.strip():
            raise KerasbertError(f"{path}: line {line} has an empty text")
        texts.append(text)
        raw_labels.append((line, label_key(label, path, line)))
    if not texts:
        raise KerasbertError(f"{path} holds no examples")
    class_names = class_names or class_names_of([key for _, key in raw_labels], path)
    index = {name: i for i, name in enumerate(class_names)}
    labels = []
    for line, key in raw_labels:
        if key not in index:
            raise KerasbertError(
                f"{path}: line {line} has label {key!r}, which is not one of the classes {', '.join(class_names)}"
            )
        labels.append(index[key])
    return LabeledTexts(np.array(texts, dtype=object), np.array(labels, dtype="int32")), class_names


def csv_rows(content, path):
    reader = csv.DictReader(io.StringIO(content, newline=""))
    missing = {"text", "label"} - set(reader.fieldnames or ())
    if missing:
        raise KerasbertError(f"{path}: missing column(s) {', '.join(sorted(missing))} (the header needs text and label)")
    for row in reader:
        yield reader.line_num, row["text"], row["label"]


def jsonl_rows(content, path):
    for line, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as error:
            raise KerasbertError(f"{path}: line {line} is not valid JSON ({error.msg})") from None
        if not isinstance(row, dict) or "text" not in row or "label" not in row:
            raise KerasbertError(f"{path}: line {line} needs an object with text and label")
        yield line, row["text"], row["label"]


def label_key(label, path, line):
    """A label as its class-name string: an integer or a non-empty name."""
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        raise KerasbertError(f"{path}: line {line} has label {label!r}, which is not an integer or a class name")
    key = str(label).strip()
    if not key or re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+|\d+[eE][+-]?\d+)", key):
        raise KerasbertError(f"{path}: line {line} has label {label!r}, which is not an integer or a class name")
    return str(int(key)) if INTEGER.match(key) else key


def class_names_of(keys, path):
    distinct = set(keys)
    numeric = {key for key in distinct if INTEGER.match(key)}
    if numeric and numeric != distinct:
        raise KerasbertError(
            f"{path}: labels mix integers ({', '.join(sorted(numeric)[:3])}) and names "
            f"({', '.join(sorted(distinct - numeric)[:3])})"
        )
    return sorted(distinct, key=int) if numeric else sorted(distinct)


# --- tf.data pipelines -----------------------------------------------------


def training_dataset(data, preprocessor, batch_size, seed, length_bucketing=True, first_epoch=0, skip_batches=0):
    """Shuffled, batched, tokenized training batches, in a new order on every pass.

    Each pass over the dataset is one epoch (Keras starts one per epoch): the
    k-th pass yields epoch `first_epoch + k`, whose order is a function of
    (seed, epoch) alone. So `fit(dataset, epochs=3)` trains on three orders,
    and a rerun with the same seed on the same three. `skip_batches` leaves
    out the first batches of every pass: a run killed in the middle of epoch
    E finishes it on `training_dataset(..., first_epoch=E, skip_batches=done)`
    and goes on with `first_epoch=E + 1`, seeing exactly the batches an
    uninterrupted run would. With several workers every worker builds the
    same order and keeps its share of the batches (DATA sharding).

    Build it outside a `strategy.scope()`: it counts its passes in a variable.
    """
    texts, labels = tf.constant(list(data.texts), dtype=tf.string), tf.constant(data.labels)
    with tf.device("/cpu:0"):
        passes_started = tf.Variable(first_epoch - 1, dtype=tf.int64, trainable=False, name="passes_started")

    def epoch_batches(epoch):
        epoch_seed = seed * 1_000_003 + epoch
        dataset = tf.data.Dataset.from_tensor_slices((texts, labels))
        dataset = dataset.shuffle(len(data), seed=epoch_seed, reshuffle_each_iteration=False)
        if length_bucketing:
            window = batch_size * BUCKET_WINDOW_BATCHES
            dataset = dataset.batch(window).map(sort_by_length).unbatch()
            dataset = dataset.batch(batch_size).shuffle(BUCKET_WINDOW_BATCHES, seed=epoch_seed,
                                                        reshuffle_each_iteration=False)
        else:
            dataset = dataset.batch(batch_size)
        return dataset.skip(skip_batches)  # before tokenizing: skipping costs nothing

    dataset = tf.data.Dataset.from_tensors(0).map(lambda _: passes_started.assign_add(1)).flat_map(epoch_batches)
    # Keras reads the number of batches once, for every epoch: its progress bar and epoch ends need it.
    batches = max(-(-len(data) // batch_size) - skip_batches, 0)
    return tokenized(dataset.apply(tf.data.experimental.assert_cardinality(batches)), preprocessor, length_bucketing)


def evaluation_dataset(data, preprocessor, batch_size, length_bucketing=True):
    """Batched, tokenized batches in the order of `data` (sort it first to bucket)."""
    dataset = tf.data.Dataset.from_tensor_slices((list(data.texts), data.labels))
    return tokenized(dataset.batch(batch_size), preprocessor, length_bucketing)


def sort_by_length(texts, labels):
    order = tf.argsort(tf.strings.length(texts))
    return tf.gather(texts, order), tf.gather(labels, order)


def tokenized(dataset, preprocessor, trim):
    def preprocess(texts, labels):
        features = preprocessor(texts)
        return (trim_padding(features) if trim else features), labels

    options = pipeline_options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return dataset.with_options(options)


def pipeline_options():
    """tf.data options for every pipeline here: autotuning off.

    Autotuning gives each iterator a model thread that sleeps between tuning
    rounds (10 ms, doubling up to a minute). Dropping the iterator, which `fit`,
    `evaluate` and `predict` do when the data runs out, cancels that thread and
    waits for it. TensorFlow wakes the thread before it marks the cancellation
    done, so the thread can see "not cancelled" and sleep on to its next round:
    the CPU idles for up to a minute (7-13 s after the benchmark's 30 s epochs,
    `benchmarks/iterator_teardown.py`). Without autotuning, AUTOTUNE parallelism
    is one call per core and prefetching grows its own buffer, plenty for tokenizing.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def trim_padding(features):
    """Cut a batch's padding columns down to its longest sequence (rounded up)."""
    longest = tf.reduce_max(tf.reduce_sum(tf.cast(features["padding_mask"], tf.int32), axis=1))
    width = tf.shape(features["token_ids"])[1]
    keep = tf.minimum(width, -(-longest // PAD_TO_MULTIPLE_OF) * PAD_TO_MULTIPLE_OF)
    return {name: value[:, :keep] for name, value in features.items()}
