"""The README's default run, measured: `python train.py` (fine-tune on the 22,500 training
reviews, evaluate on all 25,000 test reviews) in a child process, then its metrics, wall
times, the time estimate it printed and its peak memory appended to `--results` under a
heading naming the machine, the date and the command.

    python benchmarks/default_run.py --data-dir ../shared/data/tensorflow_datasets

Extra arguments after `--` go to train.py (e.g. `-- --max-train-examples 5000`).
"""

import argparse
import datetime
import os
import resource
import subprocess
import sys
import time

from machine import append_results, results_heading

from kerasbert.files import read_json


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR", ""))
    parser.add_argument("--output-dir", default=f"runs/default-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    parser.add_argument("--results", default="benchmarks/default_run.md")
    parser.add_argument("train_args", nargs="*", help="Options passed on to train.py (after --).")
    args = parser.parse_args()
    if args.data_dir and not os.path.isdir(args.data_dir):
        parser.error(f"--data-dir {args.data_dir} is not a directory")
    command = [sys.executable, "train.py", "--output-dir", args.output_dir, *args.train_args]
    started = time.perf_counter()
    completed = subprocess.run(command, env={**os.environ, "TFDS_DATA_DIR": args.data_dir})
    wall = time.perf_counter() - started
    if completed.returncode:
        raise SystemExit(f"train.py failed with exit status {completed.returncode}")
    metrics = read_json(os.path.join(args.output_dir, "metrics.json"))
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    record_run(args, metrics, wall, peak_gib)


def record_run(args, metrics, wall, peak_gib):
    more_rows = [("child process wall time", f"{wall / 60:.1f} min"), ("peak resident memory", f"{peak_gib:.2f} GiB")]
    append_results(args.results, [results_heading(), f"Run directory `{args.output_dir}`.\n", *run_table(metrics, more_rows)])


def run_table(metrics, more_rows=()):
    """The results table of one train.py run (its metrics.json) and its confusion matrix, as lines."""
    test, timing, estimate = metrics["test"], metrics["timing"], metrics.get("estimate") or {}
    positive = test["per_class"][metrics["class_names"][-1]]
    precision = metrics["precision"]
    rows = [
        ("test accuracy", f"{test['accuracy']:.2%} ({metrics['examples']['test']:,} reviews)"),
        ("test precision / recall / F1 (last class)", f"{positive['precision']:.2%} / {positive['recall']:.2%} / "
                                                      f"{positive['f1']:.2%}"),
        ("test ROC-AUC", f"{test['roc_auc']:.4f}"),
        ("validation accuracy", f"{metrics['validation'].get('accuracy', float('nan')):.2%} "
                                f"({metrics['examples']['validation']:,} held-out train reviews)"),
        ("compute precision", f"{precision['resolved']} ({precision['reason']})"),
        ("fine-tuning", f"{timing['train_seconds'] / 60:.1f} min, {timing['train_sequences_per_second']:.2f} "
                        f"sequences/s ({metrics['optimizer_steps']:,} steps)"),
        ("test evaluation", f"{timing['eval_seconds'] / 60:.1f} min, {timing['eval_sequences_per_second']:.1f} "
                            "sequences/s"),
        ("total, process start to metrics.json", f"**{timing['total_seconds'] / 60:.1f} min**"),
        ("estimate printed after the first steps", f"{estimate.get('total_seconds', float('nan')) / 60:.1f} min"),
        *more_rows,
    ]
    lines = measure_table(rows)
    lines.append(f"\nConfusion matrix (rows true, columns predicted, classes {', '.join(metrics['class_names'])}): "
                 f"{test['confusion_matrix']}.\n")
    return lines


def measure_table(rows):
    """A two-column Markdown table of (measure, value) rows, as lines."""
    return ["| measure | value |", "|---|---|"] + [f"| {name} | {value} |" for name, value in rows]


if __name__ == "__main__":
    main()
