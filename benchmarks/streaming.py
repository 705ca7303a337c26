"""Training on a file bigger than memory (issue 38): for each file, in a process of its own (so
its peak RSS is its own), a `fit` of `--steps` steps on `kerasbert.streaming`'s batches: the
seconds from the process's start to the end of the first step, peak RSS, and training
throughput; then the same steps on the in-memory path (`fit(texts, labels)`) over the first
`--in-memory-rows` rows of the first file, side by side in the same run.

    python benchmarks/synthetic_reviews.py --rows 1000000 --length-scale 0.4 --output /tmp/synthetic/1m.csv
    python benchmarks/synthetic_reviews.py --rows 3000000 --length-scale 0.4 --output /tmp/synthetic/3m.csv
    python benchmarks/streaming.py /tmp/synthetic/1m.csv /tmp/synthetic/3m.csv --steps 200
"""

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time

STARTED = time.perf_counter()
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "streaming.md")


def measure(path, steps, batch_size, length, in_memory_rows):
    """One fit in this process; what it measured, as a dict."""
    import keras

    import kerasbert
    from kerasbert.streaming import split_by_text_hash, stream_labeled_texts, streamed_batches

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                self.first = time.perf_counter()

    keras.utils.set_random_seed(0)
    classifier = kerasbert.TextClassifier.from_preset(class_names=["neg", "pos"], sequence_length=length)
    classifier.compile(optimizer=kerasbert.adamw_with_warmup(5e-5, total_steps=steps))
    first = FirstStep()
    if in_memory_rows:
        with open(path, newline="", encoding="utf-8") as file:
            rows = [row for _, row in zip(range(in_memory_rows), csv.DictReader(file))]
        fit = dict(x=[row["text"] for row in rows], y=[int(row["label"] == "pos") for row in rows],
                   batch_size=batch_size)
    else:
        train, _ = split_by_text_hash(stream_labeled_texts(path, ["neg", "pos"]), 0.1)
        fit = dict(x=streamed_batches(train, classifier.preprocessor, batch_size, seed=0))
    classifier.fit(**fit, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[first])
    ended = time.perf_counter()
    return {"first_step_seconds": first.first - STARTED, "sequences_per_second": (steps - 1) * batch_size /
            (ended - first.first), "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--in-memory-rows", type=int, default=20_000)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a measuring child process
    args = parser.parse_args()
    if args.one:
        rows = args.in_memory_rows if args.files[1] == "in-memory" else 0
        print(json.dumps(measure(args.files[0], args.steps, args.batch_size, args.max_seq_length, rows)))
        return
    from machine import append_results, results_heading

    runs = [(path, "streamed") for path in args.files] + [(args.files[0], "in-memory")]
    lines = [results_heading(), f"{args.steps} steps of batch {args.batch_size} at {args.max_seq_length} tokens; "
             f"in memory: the first {args.in_memory_rows:,} rows of {args.files[0]}.", "",
             "| file | size | path | first step after (s) | peak RSS (MiB) | train seq/s |", "|---|---|---|---|---|---|"]
    for path, mode in runs:
        child = subprocess.run([sys.executable, __file__, path, mode, "--one", "--steps", str(args.steps),
                                "--batch-size", str(args.batch_size), "--max-seq-length", str(args.max_seq_length),
                                "--in-memory-rows", str(args.in_memory_rows)], capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"{path} ({mode}) failed: {child.stderr[-2000:]}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
        lines.append(f"| {os.path.basename(path)} | {os.path.getsize(path) / 2**30:.2f} GiB | {mode} | "
                     f"{result['first_step_seconds']:.1f} | {result['peak_rss_mib']:,.0f} | "
                     f"{result['sequences_per_second']:.2f} |")
        print(lines[-1], flush=True)
    append_results(RESULTS, lines)


if __name__ == "__main__":
    main()
