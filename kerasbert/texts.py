r"""Labeled texts and the files they come from: aclImdb folders and tarballs,
CSV and JSONL tables. Each reader returns `LabeledTexts` (texts plus integer
labels) and the class names the source declares, so a 3-class CSV trains a
3-class head.

Example:

>>> import pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "train.csv"
>>> _ = path.write_text("text,label\nA joy.,pos\nDull.,neg\nFine.,pos\n")
>>> reviews, class_names = read_table(str(path))
>>> class_names, reviews.labels.tolist()
(['neg', 'pos'], [1, 0, 1])
"""

import contextlib
import csv
import gzip
import dataclasses
import io
import json
import os
import re
import tarfile
import zlib

import numpy as np

from kerasbert.errors import KerasbertError

ACL_IMDB_CLASSES = ["neg", "pos"]
csv.field_size_limit(2**31 - 1)  # a review may be long, and the whole file is in memory already


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

    def length_order(self):
        """The indices of the examples, shortest text first (characters predict token counts)."""
        return np.argsort([len(text) for text in self.texts], kind="stable")

    def sorted_by_length(self):
        """The same examples, shortest text first."""
        return self.take(self.length_order())


# --- Stanford aclImdb layout ----------------------------------------------

MAX_REVIEW_BYTES = 1 << 24  # the longest aclImdb review is 14 KB
ACL_IMDB_FILE = re.compile(r"(?:^|/)(train|test)/(neg|pos)/[^/]+\.txt$")


def read_acl_imdb(path):
    """Train and test reviews of an aclImdb folder or .tar.gz (train/{neg,pos}/*.txt, ...)."""
    if not os.path.exists(path):
        raise KerasbertError(f"dataset path {path} does not exist")
    found = {("train", "neg"): [], ("train", "pos"): [], ("test", "neg"): [], ("test", "pos"): []}
    for name, read in acl_imdb_files(path):
        match = ACL_IMDB_FILE.search(name)
        if match and not os.path.basename(name).startswith("._"):  # macOS AppleDouble files are not reviews
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
                check_review_size(path, full, os.path.getsize(full))
                yield full.replace(os.sep, "/"), lambda full=full: open(full, "rb").read()
        return
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                if member.isfile():
                    check_review_size(path, member.name, member.size)
                    data = archive.extractfile(member).read()
                    yield member.name, lambda data=data: data
            # tarfile stops at the end-of-archive blocks; gzip checks its CRC and length only at the
            # stream's end, so read on to it: a flipped bit anywhere must not pass as altered reviews.
            while archive.fileobj.read(1 << 20):
                pass
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise KerasbertError(f"{path} is not a readable aclImdb folder or tarball: {error}") from None


def check_review_size(path, name, size):
    if size > MAX_REVIEW_BYTES and ACL_IMDB_FILE.search(name.replace(os.sep, "/")):
        raise KerasbertError(f"{path}: {name} is {size} bytes; files over {MAX_REVIEW_BYTES} bytes are not reviews")


def acl_imdb_split(found, split):
    texts, labels = [], []
    for label, class_name in enumerate(ACL_IMDB_CLASSES):
        for name, read in sorted(found[(split, class_name)]):
            # Strip bytes, not str, as the tfds builder does: it keeps trailing non-ASCII spaces.
            texts.append(decode_text(read().strip(), name))
            labels.append(label)
    return LabeledTexts(np.array(texts, dtype=object), np.array(labels, dtype="int32"))


def read_file_text(path, what="input file"):
    """A whole UTF-8 file as text; a missing file or bad bytes give one-line errors."""
    if not os.path.isfile(path):
        raise KerasbertError(f"{what} {path} does not exist")
    with open(path, "rb") as file:
        return decode_text(file.read(), path)


@contextlib.contextmanager
def lines_of(path, what="input file"):
    """The lines of a UTF-8 file, plain or gzip, decoded as they are read (only "\n" ends one,
    a byte-order mark is dropped): memory stays flat however long the file. A missing file or
    bad bytes give one-line errors naming the line."""
    if not os.path.isfile(path):
        raise KerasbertError(f"{what} {path} does not exist")
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as file:
        yield decoded_lines(file, path)


def decoded_lines(file, path):
    for number, line in enumerate(file, start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise KerasbertError(f"{path}: line {number} is not valid UTF-8 (byte {error.start})") from None
        yield text.removeprefix("\ufeff") if number == 1 else text


def decode_text(data, where):
    """UTF-8 bytes as text, without a byte-order mark."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise KerasbertError(f"{where}: line {line} is not valid UTF-8 (byte {error.start})") from None


# --- CSV and JSONL files ---------------------------------------------------

INTEGER = re.compile(r"^[+-]?\d+$")


def read_table(path, class_names=None):
    """Texts and labels of a CSV or TSV (`text,label` header) or JSON Lines file.

    Labels are integers or class names. Without `class_names` (the training
    file), the classes are the sorted distinct labels; with them (the test
    file), every label must be one of them.
    """
    texts, raw_labels = [], []
    for line, row in read_rows(path, ("text", "label"), "data file"):
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise KerasbertError(f"{path}: line {line} has an empty text")
        texts.append(row["text"])
        raw_labels.append((line, label_key(row["label"], path, line)))
    if not texts:
        raise KerasbertError(f"{path} holds no examples")
    class_names = class_names or class_names_from_labels([key for _, key in raw_labels], path)
    index = {name: i for i, name in enumerate(class_names)}
    labels = []
    for line, key in raw_labels:
        if key not in index:
            raise KerasbertError(
                f"{path}: line {line} has label {key!r}, which is not one of the classes {', '.join(class_names)}"
            )
        labels.append(index[key])
    return LabeledTexts(np.array(texts, dtype=object), np.array(labels, dtype="int32")), class_names


TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".jsonl": None, ".json": None}


def read_rows(path, required, what="input file"):
    """(line number, row) pairs of a .csv/.tsv (header row) or .jsonl/.json (one object a line)
    file, in file order, blank lines skipped; every row has the `required` fields."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in TABLE_SUFFIXES:
        raise KerasbertError(f"{path}: unknown file type (expected .csv, .tsv or .jsonl)")
    content = read_file_text(path, what)
    return list(table_rows(io.StringIO(content, newline=""), path, TABLE_SUFFIXES[suffix], required))


def table_rows(file, path, delimiter, required):
    """(line number, row) pairs of a text file's lines (an open file, or `lines_of`): delimited by
    `delimiter`, or JSON Lines for None; a row `read_rows` would refuse raises `KerasbertError`."""
    return delimited_rows(file, path, delimiter, required) if delimiter else json_lines(file, path, required)


def delimited_rows(file, path, delimiter, required):
    reader = csv.DictReader(file, delimiter=delimiter, restval=None)
    missing = set(required) - set(reader.fieldnames or ())
    if missing:
        raise KerasbertError(f"{path}: missing column(s) {', '.join(sorted(missing))} "
                             f"(the header needs {' and '.join(required)})")
    try:
        for row in reader:
            if any(row[name] is None for name in required):
                raise KerasbertError(f"{path}: line {reader.line_num} has fewer fields than the header")
            yield reader.line_num, row
    except csv.Error as error:
        raise KerasbertError(f"{path}: line {reader.line_num} is not valid CSV ({error})") from None


def json_lines(file, path, required):
    # A file's lines end at newlines only: JSON strings may hold U+2028 or U+0085, which splitlines() breaks on.
    for line, raw in enumerate(file, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as error:
            raise KerasbertError(f"{path}: line {line} is not valid JSON ({error.msg})") from None
        if not isinstance(row, dict) or any(name not in row for name in required):
            raise KerasbertError(f"{path}: line {line} needs an object with {' and '.join(required)}")
        yield line, row


def label_key(label, path, line):
    """A label as its class-name string: an integer or a non-empty name."""
    if isinstance(label, bool) or not isinstance(label, (int, str)):
        raise KerasbertError(f"{path}: line {line} has label {label!r}, which is not an integer or a class name")
    key = str(label).strip()
    if not key or re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+|\d+[eE][+-]?\d+)", key):
        raise KerasbertError(f"{path}: line {line} has label {label!r}, which is not an integer or a class name")
    return str(int(key)) if INTEGER.match(key) else key


def class_names_from_labels(keys, path):
    """The classes of a training file: its distinct labels, in numeric order if they are integers, else sorted."""
    distinct = set(keys)
    numeric = {key for key in distinct if INTEGER.match(key)}
    if numeric and numeric != distinct:
        raise KerasbertError(
            f"{path}: labels mix integers ({', '.join(sorted(numeric)[:3])}) and names "
            f"({', '.join(sorted(distinct - numeric)[:3])})"
        )
    return sorted(distinct, key=int) if numeric else sorted(distinct)
