"""Token-id parity of the strings-in TFLite tokenizer (tf-text FastBertTokenizer)
with the KerasHub preprocessor, over a whole IMDB split.

    python benchmarks/tokenizer_parity.py --data-dir ../shared/data/tensorflow_datasets \
        --results benchmarks/tokenizer_parity.md
"""

import argparse
import collections
import datetime
import os
import platform
import shlex
import sys
import unicodedata

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasbert import data  # noqa: E402
from kerasbert.deploy.tflite import tokenizer_mismatches  # noqa: E402
from kerasbert.preprocessing import ReviewPreprocessor  # noqa: E402
from kerasbert.presets import resolve_preset  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR", ""))
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--results", default="benchmarks/tokenizer_parity.md")
    args = parser.parse_args()
    train, test, _ = data.read_tfds("imdb_reviews", args.data_dir)
    texts = (train if args.split == "train" else test).texts.astype(str)
    preprocessor = ReviewPreprocessor.from_preset(resolve_preset("all_minilm_l6_v2_offline"),
                                                  sequence_length=args.max_seq_length, truncation="head+tail")
    mismatched = tokenizer_mismatches(preprocessor, texts)
    characters = collections.Counter()
    for index in mismatched:
        characters.update({ch for ch in texts[index] if ord(ch) > 127})
    with open(args.results, "a") as results:
        results.write(f"\n## {datetime.date.today()} on {platform.node()} ({os.cpu_count()} CPUs)\n\n"
                      f"Command: `python {shlex.join(sys.argv)}`\n\n"
                      f"IMDB {args.split}: {len(mismatched)} of {len(texts)} reviews get different token ids "
                      f"(sequence length {args.max_seq_length}, head+tail).\n\n"
                      "Non-ASCII characters in the mismatched reviews (reviews containing each):\n\n"
                      "| character | code point | category | name | reviews |\n|---|---|---|---|---|\n")
        for ch, count in characters.most_common():
            results.write(f"| {ch if unicodedata.category(ch)[0] not in 'ZC' else ' '} | U+{ord(ch):04X} | "
                          f"{unicodedata.category(ch)} | {unicodedata.name(ch, '?')} | {count} |\n")


if __name__ == "__main__":
    main()
