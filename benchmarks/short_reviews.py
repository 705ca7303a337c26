"""Finished runs re-scored on the short test reviews: how a model tuned on IMDB (median
about 170 words) does on reviews the length of other sites' (most under 100 words).

Runs since 2026-12-02 record accuracy by length in their metrics.json (`test.by_length`);
this re-scores older runs from their model.keras, only on the test reviews under
`--max-words`, so it takes minutes, not a full evaluation. It reports on runs whose
test score is final: it chooses nothing.

    python benchmarks/short_reviews.py runs/best-adapted-512-s42 runs/best-minilm-512-s42 \
        --data-dir ../shared/data/tensorflow_datasets --results benchmarks/short_reviews.md
"""

import argparse
import json
import os

from machine import append_results, results_heading

from kerasbert import data, evaluation
from kerasbert.model import load_classifier


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="Finished run directories (each with model.keras and config.json).")
    parser.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR", ""))
    parser.add_argument("--max-words", type=int, default=200)
    parser.add_argument("--results", default="benchmarks/short_reviews.md")
    args = parser.parse_args()
    test = data.read_tfds_split("imdb_reviews", args.data_dir or None, "test")
    short = test.take([index for index, text in enumerate(test.texts) if evaluation.words_in(text) < args.max_words])
    edges = (*(edge for edge in evaluation.LENGTH_BINS if edge < args.max_words), args.max_words)
    lines = [results_heading(), f"{len(short):,} of the {len(test):,} test reviews have under {args.max_words} words.",
             "", "| run | preset | tokens | words | reviews | accuracy |", "|---|---|---|---|---|---|"]
    for run in args.runs:
        with open(os.path.join(run, "config.json")) as file:
            config = json.load(file)
        classifier = load_classifier(os.path.join(run, "model.keras"))
        probabilities = classifier.predict_probabilities(short.texts, batch_size=config["eval_batch_size"])
        for row in evaluation.accuracy_by_length(short.texts, short.labels, probabilities, edges):
            lines.append(f"| `{run}` | `{config['preset']}` | {config['max_seq_length']} | {row['words']} | "
                         f"{row['examples']:,} | {row['accuracy']:.2%} |")
    append_results(args.results, lines)


if __name__ == "__main__":
    main()
