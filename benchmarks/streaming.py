"""Training and predicting on files bigger than memory (issue 38), as users run them: for each
file, `train.py --streaming` for `--steps` steps (`--steps-per-epoch`), each in a process of
its own; then the same steps read into memory (`--streaming off`) from a CSV of the first
`--in-memory-rows` rows of the first file, side by side in the same run; then `kerasbert
predict --input` over each file for `--predict-seconds`, its resident memory sampled as it goes.

    python benchmarks/synthetic_reviews.py --rows 1000000 --length-scale 0.4 --output /tmp/synthetic/1m.csv
    python benchmarks/synthetic_reviews.py --rows 3000000 --length-scale 0.4 --output /tmp/synthetic/3m.csv
    python benchmarks/streaming.py /tmp/synthetic/1m.csv /tmp/synthetic/3m.csv --steps 200

Per run: the seconds from the process's start to the end of its first training step (the
counting pass over the file included), its peak RSS, and training sequences/s (metrics.json).
"""

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "streaming.md")


def head_of(path, rows, output):
    """The header and first `rows` rows of a CSV file, copied to `output` (line by line: the synthetic
    files hold one review a line)."""
    with open(path, encoding="utf-8") as source, open(output, "w", encoding="utf-8") as copy:
        copy.writelines(itertools.islice(source, rows + 1))
    return output


def train(train_file, test_file, streaming, output_dir, args):
    """One `train.py` process; (metrics.json, seconds from its start to the end of its first step)."""
    from kerasbert import files

    started = time.perf_counter()
    command = [sys.executable, os.path.join(ROOT, "train.py"), "--train-file", train_file, "--test-file", test_file,
               "--streaming", streaming, "--steps-per-epoch", str(args.steps), "--validation-split", "0.001",
               "--max-test-examples", "200", "--output-dir", output_dir, "--overwrite", "--seed", "0"]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode:
        sys.exit(f"{train_file} ({streaming}) failed: {finished.stderr[-2000:]}")
    metrics = files.read_json(os.path.join(output_dir, "metrics.json"))
    timing = metrics["timing"]
    before_job = time.perf_counter() - started - timing["total_seconds"]  # the interpreter and imports
    return metrics, before_job + timing["first_step_seconds"]


def predict(model, input_file, seconds, scratch):
    """`kerasbert predict` over `input_file`, stopped `seconds` after it starts writing (its counting
    pass and the model's loading done); its RSS (MiB) then and at the end, its peak, the texts written."""
    command = [os.path.join(os.path.dirname(sys.executable), "kerasbert"), "predict", "--model", model, "--input",
               input_file, "--output", os.path.join(scratch, "predictions.jsonl")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    writing, at_start = None, None
    while process.poll() is None and (writing is None or time.perf_counter() - writing < seconds):
        temporary = [os.path.join(scratch, name) for name in os.listdir(scratch) if name.startswith(".tmp-")]
        if temporary and writing is None:
            writing, at_start = time.perf_counter(), status(process.pid)["VmRSS"]
        time.sleep(1)
    if process.poll() is not None:
        sys.exit(f"kerasbert predict on {input_file} ended early with {process.returncode}")
    memory = status(process.pid)
    with open(temporary[0]) as file:
        written = sum(1 for _ in file)
    process.kill()
    process.wait()
    return {"rss_after_count": at_start, "rss_end": memory["VmRSS"], "peak": memory["VmHWM"], "predicted": written}


def status(pid):
    """Memory figures of /proc/<pid>/status, in MiB."""
    with open(f"/proc/{pid}/status") as file:
        return {line.split(":")[0]: int(line.split()[1]) / 1024 for line in file if line.startswith("Vm")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--in-memory-rows", type=int, default=20_000)
    parser.add_argument("--predict-seconds", type=int, default=120)
    args = parser.parse_args()
    from machine import append_results, results_heading

    scratch = tempfile.mkdtemp(prefix="kerasbert-streaming-")
    test_file = os.path.join(scratch, "test.csv")  # rows the training runs do not stream (0.1% of 1M rows is 1,000)
    with open(args.files[0], encoding="utf-8") as source, open(test_file, "w", encoding="utf-8") as copy:
        rows = itertools.islice(source, 1 + 2 * args.in_memory_rows + 200)
        copy.writelines(itertools.chain([next(rows)], itertools.islice(rows, 2 * args.in_memory_rows, None)))
    small = head_of(args.files[0], args.in_memory_rows, os.path.join(scratch, "first-rows.csv"))
    runs = [(path, "on") for path in args.files] + [(small, "off")]
    lines = [results_heading(), f"`train.py` defaults (MiniLM, batch 16, 256 tokens), `--steps-per-epoch {args.steps}`, "
             "`--validation-split 0.001`, 200 test rows; in memory: the first "
             f"{args.in_memory_rows:,} rows of {os.path.basename(args.files[0])}.", "",
             "| file | size | --streaming | first step after (s) | peak RSS (MiB) | train seq/s |", "|---|---|---|---|---|---|"]
    models = {}
    for path, streaming in runs:
        run_dir = os.path.join(scratch, f"run-{len(models)}")
        metrics, first_step = train(path, test_file, streaming, run_dir, args)
        models[path] = os.path.join(run_dir, "model.keras")
        lines.append(f"| {os.path.basename(path)} | {os.path.getsize(path) / 2**30:.2f} GiB | {streaming} | "
                     f"{first_step:.1f} | {metrics['peak_rss_mib']:,.0f} | "
                     f"{metrics['timing']['train_sequences_per_second']:.2f} |")
        print(lines[-1], flush=True)
    lines += ["", f"`kerasbert predict --input FILE --output ...` with the first run's model, stopped "
              f"{args.predict_seconds} s after the counting pass:", "",
              "| file | RSS after counting (MiB) | RSS at the end (MiB) | peak RSS (MiB) | texts written |", "|---|---|---|---|---|"]
    for path in args.files:
        folder = tempfile.mkdtemp(dir=scratch)
        result = predict(models[args.files[0]], path, args.predict_seconds, folder)
        lines.append(f"| {os.path.basename(path)} | {result['rss_after_count']:,.0f} | {result['rss_end']:,.0f} | "
                     f"{result['peak']:,.0f} | {result['predicted']:,} |")
        print(lines[-1], flush=True)
    append_results(RESULTS, lines)


if __name__ == "__main__":
    main()
