"""A large synthetic review set for the streaming benchmarks (issue 38): sentences of the IMDB
*train* reviews recombined into new reviews of the same label, millions of rows, written as
CSV, TSV or JSONL shards (optionally gzip) into a scratch folder. Never commit its output;
the test split is never read, so a model trained on it can still be tested on IMDB's.

    python benchmarks/synthetic_reviews.py --rows 3000000 --length-scale 0.4 --output /tmp/synthetic/reviews.csv
    python benchmarks/synthetic_reviews.py --rows 3000000 --shards 16 --format jsonl --gzip \\
        --output /tmp/synthetic/jsonl

Each review takes as many sentences as a real review of its label (drawn from the real
counts), each sentence drawn from the reviews of that label; rows are seeded
(`--seed`), so the same command writes the same files. Each file is written under a
temporary name and renamed when whole.
"""

import argparse
import contextlib
import csv
import gzip
import json
import os
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kerasbert.data import read_tfds_split  # noqa: E402
from kerasbert.files import written_atomically  # noqa: E402

SENTENCE_END = re.compile(r"(?<=[.!?])\s+|<br\s*/?>\s*(?:<br\s*/?>\s*)*")
CHUNK_ROWS = 50_000
FORMATS = {"csv": ",", "tsv": "\t", "jsonl": None}


def sentence_pools(texts, labels):
    """Per label: every sentence of that label's reviews, and how many sentences each review has."""
    pools = {}
    for label in sorted(set(labels.tolist())):
        sentences, counts = [], []
        for text in texts[labels == label]:
            parts = [part.strip() for part in SENTENCE_END.split(str(text)) if part.strip()]
            sentences.extend(parts)
            counts.append(len(parts))
        pools[label] = (np.array(sentences, dtype=object), np.array(counts))
    return pools


def synthetic_rows(pools, class_names, rows, rng, length_scale=1.0):
    """`rows` (text, class name) pairs, in chunks; labels balanced and shuffled; each review
    `length_scale` times as many sentences as the real one drawn (at least one)."""
    labels = sorted(pools)
    for start in range(0, rows, CHUNK_ROWS):
        count = min(CHUNK_ROWS, rows - start)
        chosen = rng.choice(labels, count)
        chunk = [None] * count
        for label in labels:
            where = np.flatnonzero(chosen == label)
            sentences, counts = pools[label]
            lengths = np.maximum(1, np.rint(rng.choice(counts, len(where)) * length_scale)).astype(int)
            picks = rng.integers(0, len(sentences), lengths.sum())
            bounds = np.concatenate([[0], np.cumsum(lengths)])
            for row, first, last in zip(where, bounds[:-1], bounds[1:]):
                chunk[row] = (" ".join(sentences[picks[first:last]]), class_names[label])
        yield chunk


def open_output(path, compressed):
    return gzip.open(path, "wt", encoding="utf-8", newline="") if compressed else \
        open(path, "w", encoding="utf-8", newline="")


def shard_paths(output, shards, file_format, compressed):
    suffix = f".{file_format}" + (".gz" if compressed else "")
    if shards == 1 and output.endswith(suffix):
        return [output]
    return [os.path.join(output, f"reviews-{index:05d}-of-{shards:05d}{suffix}") for index in range(shards)]


def write_shards(rows, paths, file_format):
    """Rows dealt round-robin over the shard files, each published whole (temporary, fsync, rename)."""
    with contextlib.ExitStack() as stack:
        temporaries = [stack.enter_context(written_atomically(path)) for path in paths]
        outputs = [stack.enter_context(open_output(temporary, path.endswith(".gz")))
                   for temporary, path in zip(temporaries, paths)]
        delimiter = FORMATS[file_format]
        writers = [csv.writer(output, delimiter=delimiter) if delimiter else None for output in outputs]
        for writer in filter(None, writers):
            writer.writerow(["text", "label"])
        written, started = 0, time.monotonic()
        for chunk in rows:
            for shard, (output, writer) in enumerate(zip(outputs, writers)):
                dealt = chunk[shard::len(outputs)]
                if writer:
                    writer.writerows(dealt)
                else:
                    output.writelines(json.dumps({"text": text, "label": label}) + "\n" for text, label in dealt)
            written += len(chunk)
            print(f"{written:,} rows written ({time.monotonic() - started:.0f} s)", flush=True)
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--output", required=True, help="a file (one shard) or a folder (several shards)")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--format", choices=sorted(FORMATS), default="csv")
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--length-scale", type=float, default=1.0,
                        help="sentences per review relative to the real ones (0.4: about 1.5 GB for 3 million rows)")
    parser.add_argument("--data-dir", default=os.path.join("..", "shared", "data", "tensorflow_datasets"))
    args = parser.parse_args()
    if args.rows < 1 or args.shards < 1:
        parser.error("--rows and --shards must be positive")
    paths = shard_paths(args.output, args.shards, args.format, args.gzip)
    os.makedirs(os.path.dirname(os.path.abspath(paths[0])), exist_ok=True)
    train = read_tfds_split("imdb_reviews", args.data_dir, "train")  # never the test split
    pools = sentence_pools(train.texts, train.labels)
    print(f"{sum(len(sentences) for sentences, _ in pools.values()):,} sentences of {len(train):,} train reviews")
    rows = synthetic_rows(pools, ["neg", "pos"], args.rows, np.random.default_rng(args.seed), args.length_scale)
    written = write_shards(rows, paths, args.format)
    size = sum(os.path.getsize(path) for path in paths)
    print(f"{written:,} rows in {len(paths)} file(s), {size / 2**30:.2f} GiB: {paths[0]}{' ...' if len(paths) > 1 else ''}")


if __name__ == "__main__":
    main()
