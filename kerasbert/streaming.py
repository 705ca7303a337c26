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
import glob
import gzip
import json
import os

import tensorflow as tf

from kerasbert import data
from kerasbert.errors import KerasbertError

FORMATS = {".csv": ",", ".tsv": "\t", ".jsonl": None}
HASH_BUCKETS = 10_000
# Texts are batched with others of similar length: words (before tokenizing) in steps of 12, about
# the 16 tokens a batch's width is rounded to (coarser steps padded enough to train 10% slower).
WORD_BOUNDARIES = list(range(12, 400, 12))


def streamed_files(source):
    """The files a source names: one file, every CSV/TSV/JSONL(.gz) file of a folder, or a glob
    (sorted: the same order on every worker)."""
    if os.path.isdir(source):
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


def open_text(path):
    return gzip.open(path, "rt", encoding="utf-8", newline="") if path.endswith(".gz") else \
        open(path, encoding="utf-8", newline="")


def header_columns(path, text_column, label_column):
    """The indices of the text and label columns in a CSV/TSV file's header."""
    with open_text(path) as file:
        header = next(csv.reader(file, delimiter=FORMATS[file_format(path)[0]]), [])
    missing = [name for name in (text_column, label_column) if name not in header]
    if missing:
        raise KerasbertError(f"{path}: the header has no column {missing[0]!r} (it has {', '.join(header) or 'none'})")
    return [header.index(text_column), header.index(label_column)]


def stream_labeled_texts(source, class_names, text_column="text", label_column="label"):
    """(text, class index) pairs of every row of `source`'s files, file after file. A label that
    is not one of `class_names` stops the iteration with an error naming it."""
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

        def rows_of(path):  # CsvDataset yields the selected columns in the file's order
            rows = tf.data.experimental.CsvDataset(path, [tf.string, tf.string], header=True, compression_type=compression,
                                                   field_delim=FORMATS[suffix], select_cols=sorted([text_index, label_index]))
            return rows if text_index < label_index else rows.map(lambda label, text: (text, label))
    else:
        def rows_of(path):
            lines = tf.data.TextLineDataset(path, compression_type=compression)
            return lines.map(lambda line: tf.numpy_function(json_fields(text_column, label_column), [line],
                                                            [tf.string, tf.string], stateful=False))
    files = tf.data.Dataset.from_tensor_slices(paths)
    rows = files.interleave(rows_of, cycle_length=1, num_parallel_calls=1, deterministic=True)
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant([str(name) for name in class_names]), tf.range(len(class_names), dtype=tf.int32)), -1)

    def labeled(text, label):
        index = table.lookup(label)
        known = tf.debugging.Assert(index >= 0, [f"a label is not one of the class names ({', '.join(map(str, class_names))}):",
                                                 label])
        with tf.control_dependencies([known]):
            return text, tf.identity(index)

    return rows.map(labeled).with_options(data.pipeline_options())


def json_fields(text_column, label_column):
    def fields(line):
        row = json.loads(line)
        return str(row[text_column]).encode(), str(row[label_column]).encode()
    return fields


def split_by_text_hash(rows, validation_fraction):
    """(train, validation): each row goes where a fingerprint of its text sends it, the same on
    every run and every worker."""
    cut = int(round(validation_fraction * HASH_BUCKETS))

    def in_training(text, label):
        return tf.strings.to_hash_bucket_fast(text, HASH_BUCKETS) >= cut

    def in_validation(text, label):
        return tf.logical_not(in_training(text, label))

    return rows.filter(in_training), rows.filter(in_validation)


def count_rows(rows):
    """The number of rows, counted in one streaming pass."""
    return rows.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1)


def streamed_batches(rows, preprocessor, batch_size, seed, shuffle_buffer=10_000):
    """Tokenized training batches: rows shuffled within a buffer (seeded, a new order every epoch),
    grouped with rows of similar length, padding trimmed. Their number is not known ahead, so
    give the optimizer's schedule its length: `adamw_with_warmup(total_steps=...)`, e.g.
    epochs x `count_rows(rows)` / `batch_size` (each length group ends an epoch with a short batch)."""
    shuffled = rows.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    batched = shuffled.bucket_by_sequence_length(
        lambda text, label: tf.size(tf.strings.split(text)), WORD_BOUNDARIES, [batch_size] * (len(WORD_BOUNDARIES) + 1))
    return data.tokenized(batched, preprocessor, trim=True)
