"""Labeled texts bigger than memory, streamed from files through `tf.data`: CSV, TSV or JSONL
(plain or gzip), one file, a folder of shards or a glob. Nothing is held in Python: labels
become class indices in the graph, validation is carved by a stable hash of each text (the
same rows on every run and every worker), the order is seeded and changes every epoch,
and batches hold texts of similar length.

Example (the file could hold millions of rows):

>>> with open("reviews.csv", "w") as file:
...     _ = file.write('text,label\\n"A fine, fine film",pos\\nDull.,neg\\nGreat fun,pos\\n')
>>> rows = stream_labeled_texts("reviews.csv", class_names=["neg", "pos"])
>>> [(text.decode(), int(label)) for text, label in rows.as_numpy_iterator()]
[('A fine, fine film', 1), ('Dull.', 0), ('Great fun', 1)]
>>> train, validation = split_by_text_hash(rows, validation_fraction=0.5)
>>> sorted(int(count) for count in (count_rows(train), count_rows(validation)))
[1, 2]
"""

import csv
import dataclasses
import glob
import json
import os

import numpy as np
import tensorflow as tf

from kerasbert import data, distribution
from kerasbert.errors import KerasbertError, first_line
from kerasbert.texts import lines_of, table_rows

FORMATS = {".csv": ",", ".tsv": "\t", ".jsonl": None}
HASH_BUCKETS = 10_000
# Texts are batched with others of similar length: bytes in steps of 64, about 12 words or the 16
# tokens a batch's width is rounded to (coarser steps padded enough to train 10% slower). Bytes, not
# words: `survey` measures every row of the file, and splitting into words made that pass 2.5x slower.
LENGTH_BOUNDARIES = list(range(64, 2240, 64))
BLOCK = 1024  # rows labeled by one lookup
SURVEY_BLOCK = 65_536  # rows a survey step reads
FILES_AT_ONCE = 8


def streamed_files(source):
    """The files a source names: one file, every CSV/TSV/JSONL(.gz) file of a folder, a glob, or a
    list of files (sorted: the same order on every worker)."""
    if isinstance(source, (list, tuple)):
        found = list(source)
    elif os.path.isdir(source):
        found = [os.path.join(source, name) for name in os.listdir(source) if file_format(name)[0]]
    else:
        found = [source] if os.path.isfile(source) else glob.glob(source)
    found = sorted(found)
    if not found:
        raise KerasbertError(f"{source} names no data file (a .csv, .tsv or .jsonl file, gzipped or not, a folder "
                             "of them or a glob)")
    unknown = [path for path in found if not file_format(path)[0]]
    if unknown:
        raise KerasbertError(f"{unknown[0]}: not a .csv, .tsv or .jsonl file (gzipped or not)")
    return found


def file_format(path):
    """(suffix, gzipped) of a data file: (".csv", False), or ("", ...) for anything else."""
    gzipped = path.endswith(".gz")
    suffix = os.path.splitext(path[:-3] if gzipped else path)[1].lower()
    return (suffix if suffix in FORMATS else ""), gzipped


def header_columns(path, text_column, label_column):
    """The indices of the text and label columns in a CSV/TSV file's header."""
    with lines_of(path, "data file") as lines:
        header = next(csv.reader(lines, delimiter=FORMATS[file_format(path)[0]]), [])
    missing = [name for name in (text_column, label_column) if name not in header]
    if missing:
        raise KerasbertError(f"{path}: the header has no column {missing[0]!r} (it has {', '.join(header) or 'none'})")
    return [header.index(text_column), header.index(label_column)]


def stream_rows(source, text_column="text", label_column="label", order=None):
    """(text, label as written) string pairs of every row of `source`'s files, BLOCK rows of each
    of up to FILES_AT_ONCE files in turn (one file: its rows in order); the files in name order,
    or in one drawn from `order`, two integers such as (seed, epoch), perhaps tensors."""
    paths = streamed_files(source)
    formats = {file_format(path) for path in paths}
    if len(formats) > 1:
        raise KerasbertError(f"{source} mixes file formats: read one kind at a time")
    (suffix, gzipped), = formats
    compression = "GZIP" if gzipped else ""
    if FORMATS[suffix]:
        columns = {tuple(header_columns(path, text_column, label_column)) for path in paths}
        if len(columns) > 1:
            raise KerasbertError(f"the files of {source} order their columns differently")
        text_index, label_index = columns.pop()

        def blocks_of(path):  # CsvDataset yields the selected columns in the file's order
            rows = tf.data.experimental.CsvDataset(path, [tf.string, tf.string], header=True, compression_type=compression,
                                                   field_delim=FORMATS[suffix], select_cols=sorted([text_index, label_index]))
            blocks = rows.batch(BLOCK)
            return blocks if text_index < label_index else blocks.map(lambda labels, texts: (texts, labels))
    else:
        fields = json_fields(text_column, label_column)

        def blocks_of(path):
            lines = tf.data.TextLineDataset(path, compression_type=compression).batch(BLOCK)
            return lines.map(lambda block: tuple(tf.ensure_shape(field, [None]) for field in tf.numpy_function(
                fields, [block], [tf.string, tf.string], stateful=False)))
    # Blocks of BLOCK rows of up to FILES_AT_ONCE files in turn: a folder written one class per file
    # still mixes, and tf.data's cost per element is paid per block (per row, it tripled a pass).
    files = tf.data.Dataset.from_tensor_slices(paths if order is None else tf.gather(paths, tf.random.experimental.
                                               stateless_shuffle(tf.range(len(paths)), seed=tf.cast(tf.stack(order), tf.int64))))
    return files.interleave(blocks_of, cycle_length=min(len(paths), FILES_AT_ONCE), num_parallel_calls=1,
                            deterministic=True).unbatch()


def stream_labeled_texts(source, class_names, text_column="text", label_column="label"):
    """(text, class index) pairs of every row of `source`'s files, as `stream_rows`'. A label that
    is not one of `class_names` stops the iteration with an error naming it."""
    return labeled(stream_rows(source, text_column, label_column), class_names)


def labeled(rows, class_names):
    """(text, label string) rows as (text, index of the label in `class_names`) rows."""
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant([str(name) for name in class_names]), tf.range(len(class_names), dtype=tf.int32)), -1)

    def to_indices(texts, labels):  # a block of rows at a time: one op per row would cost a minute per million
        indices = table.lookup(labels)
        known = tf.debugging.Assert(tf.reduce_all(indices >= 0), [
            f"a label is not one of the class names ({', '.join(map(str, class_names))}):",
            tf.boolean_mask(labels, indices < 0)[:1]])
        with tf.control_dependencies([known]):
            return texts, tf.identity(indices)

    return rows.batch(BLOCK).map(to_indices).unbatch().with_options(data.pipeline_options())


def unreadable(source, error, text_column="text", label_column="label"):
    """The `KerasbertError` for a stream of `source` that failed with `error` (TensorFlow's readers
    name a record, not a file): the file and line of the first row Python's readers refuse, else
    TensorFlow's message."""
    paths = streamed_files(source) if os.path.exists(source) or glob.glob(source) else []
    try:
        for path in paths:
            with lines_of(path, "data file") as lines:
                for _ in table_rows(lines, path, FORMATS[file_format(path)[0]], (text_column, label_column)):
                    pass
    except KerasbertError as refused:
        return refused
    return KerasbertError(f"{source} cannot be read ({first_line(error)})")


def json_fields(text_column, label_column):
    def fields(lines):
        rows = [json.loads(line) for line in lines]
        return (np.array([str(row[text_column]).encode() for row in rows], dtype=object),
                np.array([str(row[label_column]).encode() for row in rows], dtype=object))
    return fields


def split_by_text_hash(rows, validation_fraction):
    """(train, validation): each row goes where a fingerprint of its text sends it, the same on
    every run and every worker."""
    cut = int(round(validation_fraction * HASH_BUCKETS))

    def part(validation):
        def kept(texts, labels):  # a block of rows at a time, as in `labeled`
            keep = (tf.strings.to_hash_bucket_fast(texts, HASH_BUCKETS) < cut) == validation
            return tf.boolean_mask(texts, keep), tf.boolean_mask(labels, keep)
        return rows.batch(BLOCK).map(kept).unbatch()

    return part(False), part(True)


def count_rows(rows):
    """The number of rows, counted in one streaming pass."""
    return rows.batch(SURVEY_BLOCK).reduce(tf.constant(0, tf.int64), lambda count, block: count + tf.cast(
        tf.shape(block[0])[0], tf.int64))


@dataclasses.dataclass
class Survey:
    """What one pass over a stream of (text, label) rows found: each label's rows, and the rows
    of the training part (`split_by_text_hash`'s) and validation part, the former by length group."""

    labels: dict
    validation: int
    train_by_length: np.ndarray

    @property
    def train(self):
        return int(self.train_by_length.sum())

    def batches_per_epoch(self, batch_size):
        """The batches `streamed_batches` makes of the training part in one epoch: one short batch per length group."""
        return int(sum(-(-count // batch_size) for count in self.train_by_length))


def survey(rows, validation_fraction=0.0):
    """Count, in one streaming pass of large blocks, the labels of `rows` (strings or integers) and
    the rows `split_by_text_hash(rows, validation_fraction)` sends each way."""
    cut = int(round(validation_fraction * HASH_BUCKETS))

    def measured(texts, labels):
        return labels, tf.strings.to_hash_bucket_fast(texts, HASH_BUCKETS) < cut, tf.strings.length(texts)

    labels, validation, by_length = {}, 0, np.zeros(len(LENGTH_BOUNDARIES) + 1, np.int64)
    blocks = rows.batch(SURVEY_BLOCK).map(measured).prefetch(1).with_options(data.pipeline_options())
    for block_labels, held_out, lengths in blocks.as_numpy_iterator():
        for label, count in zip(*np.unique(block_labels, return_counts=True)):
            labels[label] = labels.get(label, 0) + int(count)
        validation += int(held_out.sum())
        by_length += np.bincount(np.searchsorted(LENGTH_BOUNDARIES, lengths[~held_out], side="right"),
                                 minlength=len(by_length))
    return Survey(labels, validation, by_length)


def streamed_batches(rows, preprocessor, batch_size, seed, shuffle_buffer=10_000, batches_per_epoch=None,
                     first_epoch=0, skip_batches=0, length_warmup=None):
    """Tokenized training batches of `rows` (or of `rows(epoch)`, say files in a new order each
    epoch): rows shuffled within blocks of `shuffle_buffer` rows, grouped
    with rows of similar length, padding trimmed. Each pass is an epoch whose order is a function of (seed, epoch)
    alone, as `data.training_dataset`'s: the k-th pass is epoch `first_epoch + k`, and
    `skip_batches` leaves out an epoch's first batches without tokenizing them (a resumed run
    goes on with exactly the batches an uninterrupted one would see). Give `batches_per_epoch`
    (`survey(rows).batches_per_epoch(batch_size)`) and Keras knows an epoch's length; give the
    optimizer's schedule the run's (`adamw_with_warmup(total_steps=epochs * batches_per_epoch)`).
    A `preprocessing.LengthWarmup` tokenizes the run's first steps shorter. Build it outside a `strategy.scope()`."""
    def epoch_batches(epoch):
        epoch_rows = rows(epoch) if callable(rows) else rows
        # Stateless shuffles of each block, seeded by (seed, epoch, block): tf.data's own shuffle
        # would mix in TensorFlow's global seed, and refuses a seed computed in the graph when that is 0.
        def block_shuffled(block, texts, labels):
            order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(texts)[0]), seed=tf.stack(
                [tf.constant(seed, tf.int64), epoch * 2**32 + block]))
            return tf.data.Dataset.from_tensor_slices((tf.gather(texts, order), tf.gather(labels, order)))

        shuffled = epoch_rows.batch(shuffle_buffer).enumerate().flat_map(lambda block, rows: block_shuffled(block, *rows))
        return shuffled.bucket_by_sequence_length(
            lambda text, label: tf.strings.length(text), LENGTH_BOUNDARIES,
            [batch_size] * (len(LENGTH_BOUNDARIES) + 1)).skip(skip_batches)

    batches = data.each_pass_an_epoch(epoch_batches, first_epoch, length_warmup, skip_batches)
    if batches_per_epoch is not None:
        batches = batches.apply(tf.data.experimental.assert_cardinality(max(batches_per_epoch - skip_batches, 0)))
    return data.tokenized(batches, preprocessor, True, length_warmup)


@dataclasses.dataclass
class Shard:
    """One worker's share of a multi-worker run's streamed training data: every `count`-th file
    from its `index` (or every `count`-th row where there are fewer files than workers), batched
    per replica. The workers agree on the steps of an epoch through `strategy` (the fewest any
    of them has), so each stops where the others do."""

    index: int
    count: int
    strategy: tf.distribute.Strategy

    def of(self, source, order=None):
        """(this worker's rows of `source`'s files, what it reads, in words); `order` as `stream_rows`'."""
        paths = streamed_files(source)
        if len(paths) >= self.count:
            mine = paths[self.index::self.count]
            return stream_rows(mine, order=order), f"{len(mine)} of {len(paths)} files"
        return stream_rows(source).shard(self.count, self.index), f"every {self.count}th row"

    def fewest(self, count):
        """The smallest `count` of any worker (a collective: every worker calls it at the same point)."""
        return int(distribution.values_of_every_replica(self.strategy)([count]).min())

    def per_replica(self, batch_size):
        return batch_size // self.strategy.num_replicas_in_sync

    @property
    def replicas_here(self):
        return self.strategy.num_replicas_in_sync // self.count

    def steps(self, batches):
        """The steps of an epoch every worker can take, this worker having `batches` per-replica batches."""
        return self.fewest(batches // self.replicas_here)

    def distributed(self, batches, steps):
        """`batches` (per replica) cut to `steps` and fed to this worker's replicas as they are."""
        local = batches.take(steps).apply(tf.data.experimental.assert_cardinality(steps))
        local = local.with_options(off_sharding())
        return self.strategy.distribute_datasets_from_function(lambda context: local)


def off_sharding():
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options
