"""The train, validation and test splits of a run, in memory (`Splits`, from `load_splits`) or
streamed from files or tfds through `tf.data` (`StreamedSplits`, from `load_streamed_splits`):
the same methods feed either to the training job, so data bigger than memory trains as IMDB does.

Example:

>>> splits = load_splits("imdb_reviews", data_dir="../shared/data/tensorflow_datasets",
...                      max_train_examples=100, max_test_examples=50)
>>> len(splits.train), len(splits.validation), len(splits.test), splits.class_names
(90, 10, 50, ['neg', 'pos'])
>>> streamed = load_streamed_splits("imdb_reviews", data_dir="../shared/data/tensorflow_datasets",
...                                 max_train_examples=100, max_test_examples=50)
>>> streamed.sizes()["train"] + streamed.sizes()["validation"], streamed.sizes()["test"]
(100, 50)
"""

import dataclasses
import functools
import math
import os

import numpy as np
import tensorflow as tf

from kerasbert import data, preprocessing, streaming
from kerasbert.errors import KerasbertError
from kerasbert.progress import phase
from kerasbert.evaluation import words_in
from kerasbert.texts import ACL_IMDB_CLASSES, LabeledTexts, class_names_from_labels, read_acl_imdb, read_table

# A single CSV/TSV/JSONL file up to this size is read into memory, unless streaming is asked for.
IN_MEMORY_BYTES = 256 * 2**20


@dataclasses.dataclass
class Splits:
    train: LabeledTexts
    validation: LabeledTexts
    test: LabeledTexts
    class_names: list

    def sizes(self):
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}

    def batches_per_epoch(self, batch_size):
        return math.ceil(len(self.train) / batch_size)

    def training_batches(self, preprocessor, batch_size, seed, length_bucketing=True, first_epoch=0, skip_batches=0,
                         steps=None, length_warmup=None):
        """Each epoch's batches (`data.training_dataset`), only its first `steps` if given."""
        return data.training_dataset(self.train, preprocessor, batch_size, seed, length_bucketing, first_epoch,
                                     skip_batches, length_warmup).take(
                                         (steps or self.batches_per_epoch(batch_size)) - skip_batches)

    def validation_batches(self, preprocessor, batch_size, length_bucketing=True):
        if len(self.validation):
            return data.evaluation_dataset(self.validation.sorted_by_length(), preprocessor, batch_size, length_bucketing)
        return None

    def validation_sample(self, count, seed):
        return self.validation.sample(count, seed).sorted_by_length()

    def test_batches(self, preprocessor, batch_size, length_bucketing=True):
        """(batches, labels, words per text) of the test split, in the batches' order."""
        test = self.test.sorted_by_length()
        words = np.array([words_in(text) for text in test.texts], np.int64)
        return data.evaluation_dataset(test, preprocessor, batch_size, length_bucketing), test.labels, words


def load_splits(dataset="imdb_reviews", data_dir=None, train_file=None, test_file=None, validation_split=0.1,
                max_train_examples=0, max_test_examples=0, seed=0, with_test=True, class_names=()):
    """Train, validation (carved from train with `seed`) and test data, in memory.

    The texts come from `train_file` and `test_file` (CSV or JSONL) when given,
    else from `dataset`: an aclImdb folder or tarball, or a prepared tfds
    dataset in `data_dir`. `max_*_examples` take seeded subsets (0: all).
    Without `with_test` the test split is not read at all (its part is empty):
    what chooses settings on validation must not see it. `class_names` (files only) fixes the
    classes and their order.
    """
    if bool(train_file) != bool(test_file):
        raise KerasbertError("a training file and a test file go together: give both")
    if train_file:
        train, class_names = read_table(train_file, list(class_names) or None)
        test = read_table(test_file, class_names)[0] if with_test else None
    elif looks_like_path(dataset):
        train, test = read_acl_imdb(dataset)
        class_names = ACL_IMDB_CLASSES
    elif with_test:
        train, test, class_names = data.read_tfds(dataset, data_dir or None)
    else:
        train = data.read_tfds_split(dataset, data_dir or None, "train")
        class_names = data.tfds_class_names(dataset, data_dir)
    if not with_test:
        test = LabeledTexts(np.array([], dtype=object), np.array([], np.int32))
    if len(class_names) < 2:
        raise KerasbertError(f"the training data has only one class ({class_names[0]}); a classifier needs two or more")
    train = train.sample(max_train_examples, seed)
    train, validation = train.split(validation_split, seed)
    test = test.sample(max_test_examples, seed)
    for name, part in (("training", train), ("test", test))[:2 if with_test else 1]:
        if not len(part):
            raise KerasbertError(f"the {name} split is empty")
    return Splits(train, validation, test, list(class_names))


def looks_like_path(dataset):
    return os.sep in dataset or dataset.endswith((".tar.gz", ".tgz")) or os.path.exists(dataset)


def should_stream(streaming_option, train_file):
    """Whether a run streams its data: when asked ("on"), never when told "off", and with "auto"
    when the training data is not one plain file of at most `IN_MEMORY_BYTES` (a folder or glob of
    shards, gzip, or a big file). tfds datasets and aclImdb stay in memory unless asked."""
    if streaming_option != "auto":
        return streaming_option == "on"
    if not train_file:
        return False
    paths = streaming.streamed_files(train_file)
    return paths != [train_file] or train_file.endswith(".gz") or os.path.getsize(train_file) > IN_MEMORY_BYTES


@dataclasses.dataclass(eq=False)  # hashed by identity: `batches_per_epoch` is cached
class StreamedSplits:
    """Splits read from their files (or tfds) on every pass, never held in memory: `train` and
    `validation` are (text, class index) row datasets carved by `streaming.split_by_text_hash`,
    `survey` what one pass over the training rows counted."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    class_names: list
    survey: streaming.Survey
    test_rows: int
    shard: streaming.Shard = None  # this worker's share, in a multi-worker run
    everyone_validates: tf.data.Dataset = None  # validation rows of every file, in a multi-worker run
    reordered: callable = None  # order -> the training rows, the files in an order drawn from it

    def sizes(self):
        return {"train": self.survey.train, "validation": self.survey.validation, "test": self.test_rows}

    @functools.cache  # with a shard, a collective: once per batch size
    def batches_per_epoch(self, batch_size):
        if self.shard:
            return self.shard.steps(self.survey.batches_per_epoch(self.shard.per_replica(batch_size)))
        return self.survey.batches_per_epoch(batch_size)

    def training_batches(self, preprocessor, batch_size, seed, length_bucketing=True, first_epoch=0, skip_batches=0,
                         steps=None, length_warmup=None):
        steps = min(steps or math.inf, self.batches_per_epoch(batch_size))
        rows = self.train if self.reordered is None else (
            lambda epoch: self.reordered((tf.constant(seed, tf.int64), epoch)))  # files in a new order each epoch
        if self.shard:
            replicas = self.shard.replicas_here  # a worker's batches go to its replicas in turn
            if length_warmup is not None:
                length_warmup = preprocessing.LengthWarmup(length_warmup.length, length_warmup.steps * replicas,
                                                           length_warmup.steps_per_epoch * replicas)
            batches = streaming.streamed_batches(rows, preprocessor, self.shard.per_replica(batch_size),
                                                 seed + self.shard.index, first_epoch=first_epoch,
                                                 skip_batches=skip_batches * replicas, length_warmup=length_warmup)
            return self.shard.distributed(batches, steps - skip_batches)
        return streaming.streamed_batches(rows, preprocessor, batch_size, seed,
                                          batches_per_epoch=self.batches_per_epoch(batch_size), first_epoch=first_epoch,
                                          skip_batches=skip_batches, length_warmup=length_warmup).take(steps - skip_batches)

    def validation_batches(self, preprocessor, batch_size, length_bucketing=True):
        if self.shard:
            per_replica = self.shard.per_replica(batch_size)
            steps = self.shard.steps(math.ceil(self.survey.validation / per_replica))
            return self.shard.distributed(data.tokenized(self.validation.batch(per_replica), preprocessor, True), steps) \
                if steps else None
        if self.survey.validation:
            return in_file_order(self.validation, preprocessor, batch_size, self.survey.validation)
        return None

    def validation_sample(self, count, seed):
        """The first `count` validation rows (the stream's order is already random with respect to the
        hash), the same on every worker."""
        validation = self.validation if self.everyone_validates is None else self.everyone_validates
        return rows_in_memory(validation.take(count)).sorted_by_length()

    def test_batches(self, preprocessor, batch_size, length_bucketing=True):
        """(batches, labels, words per text) of the test rows, in file order; the labels and word counts
        (a few bytes a row) come from a pass of their own, the texts are never held."""
        labels, words = [], []
        measured = self.test.batch(streaming.SURVEY_BLOCK).map(lambda texts, indices: (
            indices, tf.strings.split(texts).row_lengths()))
        for block_labels, block_words in measured.with_options(data.pipeline_options()).as_numpy_iterator():
            labels.append(block_labels)
            words.append(block_words)
        return (in_file_order(self.test, preprocessor, batch_size, self.test_rows), np.concatenate(labels),
                np.concatenate(words))


def in_file_order(rows, preprocessor, batch_size, count):
    batches = rows.batch(batch_size).apply(tf.data.experimental.assert_cardinality(math.ceil(count / batch_size)))
    return data.tokenized(batches, preprocessor, trim=True)


def load_streamed_splits(dataset="imdb_reviews", data_dir=None, train_file=None, test_file=None, validation_split=0.1,
                         max_train_examples=0, max_test_examples=0, class_names=(), with_test=True, shard=None):
    """`load_splits`' splits streamed: from `train_file` and `test_file` (CSV, TSV or JSONL files, a
    folder or glob of shards, plain or gzip), else a tfds dataset's splits. One pass over each
    counts the rows (for the schedule and the time estimate) and, without `class_names`, finds the
    classes. Validation is carved by a stable hash of each text; `max_*_examples` take the first rows.
    With a `Shard` (several workers), this worker reads and counts its share of the training files;
    the classes must then be given."""
    if bool(train_file) != bool(test_file):
        raise KerasbertError("a training file and a test file go together: give both")
    everyone = None
    if shard and not (train_file and class_names):
        raise KerasbertError("streaming over several workers reads files (--train-file) and needs --class-names: "
                             "no worker sees every label")

    def file_rows(order=None):  # this worker's training files' rows, the files in `order`
        return shard.of(train_file, order)[0] if shard else streaming.stream_rows(train_file, order=order)

    if shard:
        everyone = streaming.labeled(streaming.stream_rows(train_file), class_names)
        everyone = streaming.split_by_text_hash(everyone, validation_split)[1]
        phase(f"worker {shard.index} of {shard.count} reads {shard.of(train_file)[1]} of {train_file}")
    if train_file:
        train, test = file_rows(), streaming.stream_rows(test_file) if with_test else None
    else:
        train, test = (tfds_rows(dataset, data_dir, split) for split in ("train", "test"))
        class_names = class_names or data.tfds_class_names(dataset, data_dir or None)
    train = train.take(max_train_examples) if max_train_examples else train
    test = test.take(max_test_examples) if max_test_examples and with_test else test
    survey = surveyed(train, validation_split, train_file or dataset)
    test_survey = surveyed(test, 0.0, test_file or dataset) if with_test else streaming.Survey({}, 0, np.zeros(1))
    if train_file:
        class_names = list(class_names) or class_names_from_labels([label.decode() for label in survey.labels],
                                                                   train_file)
        for source, found in ((train_file, survey), (test_file, test_survey)):
            unknown = sorted(set(label.decode() for label in found.labels) - set(class_names))
            if unknown:
                raise KerasbertError(f"{source} has label {unknown[0]!r}, which is not one of the classes "
                                     f"{', '.join(class_names)}")
        train, test = streaming.labeled(train, class_names), streaming.labeled(test, class_names) if with_test else None
    if len(class_names) < 2:
        raise KerasbertError(f"the training data has only one class ({class_names[0]}); a classifier needs two or more")
    for name, rows in (("training", survey.train), ("test", test_survey.train))[:2 if with_test else 1]:
        if not rows:
            raise KerasbertError(f"the {name} split is empty")
    train, validation = streaming.split_by_text_hash(train, validation_split)
    reordered = None
    # Files in a new order each epoch; not with --max-train-examples: the first rows of one order are not another's.
    if train_file and not max_train_examples and len(streaming.streamed_files(train_file)) > 1:
        def reordered(order):
            return streaming.split_by_text_hash(streaming.labeled(file_rows(order), class_names), validation_split)[0]
    return StreamedSplits(train, validation, test, list(class_names), survey, test_survey.train, shard, everyone,
                          reordered)


def first_test_rows(count, class_names, test_file=None, dataset="imdb_reviews", data_dir=None):
    """The first `count` rows of a streamed run's test data, in memory."""
    if test_file:
        rows = streaming.stream_labeled_texts(test_file, class_names)
    else:
        rows = tfds_rows(dataset, data_dir, "test")
    return rows_in_memory(rows.take(count))


def rows_in_memory(rows):
    texts, labels = [], []
    for text, label in rows.as_numpy_iterator():
        texts.append(text.decode("utf-8"))
        labels.append(label)
    return LabeledTexts(np.array(texts, dtype=object), np.array(labels, np.int32))


def stream_unlabeled_texts(dataset="imdb_reviews", data_dir=None, splits=("unsupervised", "train"), validation_split=0.1,
                           max_texts=0):
    """`data.load_unlabeled_texts`' texts streamed, as (text, label) rows: the `splits` of a tfds
    dataset one after the other, train's rows without those `load_streamed_splits` validates on
    (by the hash of each text), never test; `max_texts` takes the first ones."""
    if "test" in splits or not splits:
        raise KerasbertError("adapt on unlabeled and training texts (not on test, and on at least one split)")
    parts = [tfds_rows(dataset, data_dir, split) for split in splits]
    parts = [streaming.split_by_text_hash(rows, validation_split)[0] if split == "train" else rows
             for split, rows in zip(splits, parts)]
    rows = functools.reduce(tf.data.Dataset.concatenate, parts)
    return rows.take(max_texts) if max_texts else rows


def tfds_rows(dataset, data_dir, split):
    """(text, class index) rows of a prepared tfds dataset's split, streamed."""
    rows = data.supervised_split(data.prepared_builder(dataset, data_dir or None), split)
    return rows.map(lambda text, label: (text, tf.cast(label, tf.int32)))


def surveyed(rows, validation_fraction, source):
    """`streaming.survey`, with a row the readers refuse reported as one line naming its file and line."""
    try:
        return streaming.survey(rows, validation_fraction)
    except tf.errors.OpError as error:
        raise streaming.unreadable(source, error) from None
