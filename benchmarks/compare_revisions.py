"""The same `train.py` command on two git revisions, alternating (A B A B ...), on this machine:
test accuracy and throughput side by side, from each run's metrics.json.

    python benchmarks/compare_revisions.py 9c7dba3 HEAD --rounds 2 --seeds 0,1 -- \
        --max-train-examples 5000 --max-test-examples 5000

Each revision is extracted with `git archive` into a temporary folder and run with this
checkout's virtual environment (the revisions must share requirements), from the directory
this script is started in, so relative paths after `--` mean what they mean here. Arguments
after `--` go to `train.py` of both; `--seed` and `--output-dir` are set here.

With `--throughput LENGTH`, each revision's own `benchmarks/versus_hugging_face.py` worker
measures kerasbert's training and inference sequences/s at LENGTH tokens instead, timed on a
second pass over the same real train reviews: the steady state of a long run, once every batch
shape has been traced and compiled (a short `train.py` run also pays that compilation).
Workers older than 9e2cc93 timed a first pass after three warm-up steps; with `--this-worker`,
this checkout's worker measures both revisions' libraries the same way (a revision since
`TextClassifier.from_preset`, e267766).

    python benchmarks/compare_revisions.py 5b2cca0 HEAD --rounds 2 --throughput 512 --this-worker
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def extract(revision, folder):
    archive = subprocess.run(["git", "-C", ROOT, "archive", revision], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)


def revision_environment(folder):
    """This process's environment as it started (kerasbert's import adds defaults that an older
    revision would not set), running the revision in `folder`."""
    from machine import STARTED_ENVIRONMENT

    return {**STARTED_ENVIRONMENT, "PYTHONPATH": folder, "TF_CPP_MIN_LOG_LEVEL": "2"}


def run(folder, train_args, seed, output):
    environment = revision_environment(folder)
    command = [sys.executable, os.path.join(folder, "train.py"), *train_args, "--seed", str(seed),
               "--output-dir", output]
    completed = subprocess.run(command, env=environment, capture_output=True, text=True)
    if completed.returncode:
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "failed"}
    with open(os.path.join(output, "metrics.json")) as file:
        metrics = json.load(file)
    return {"accuracy": metrics["test"]["accuracy"], "train": metrics["timing"]["train_sequences_per_second"],
            "eval": metrics["timing"]["eval_sequences_per_second"]}


def run_throughput(folder, reviews, length, worker_root, options):
    """(training, inference) sequences/s of the revision in `folder`, measured by the kerasbert
    worker of the checkout in `worker_root` with TrainConfig `options`."""
    job = {"mode": "throughput", "reviews": reviews, "length": length, "options": options, "batch_size": 16,
           "eval_batch_size": 64}
    environment = revision_environment(folder)
    command = [sys.executable, os.path.join(worker_root, "benchmarks", "versus_hugging_face.py"), "--worker", "kerasbert",
               "--job", json.dumps(job)]
    completed = subprocess.run(command, env=environment, capture_output=True, text=True)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode or not lines:
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "failed"}
    result = json.loads(lines[-1])
    return {"train": result["train_sps"], "eval": result["inference_sps"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "compare_revisions.md"))
    parser.add_argument("--throughput", type=int, metavar="LENGTH",
                        help="Measure second-pass throughput at LENGTH tokens instead of running train.py.")
    parser.add_argument("--this-worker", action="store_true",
                        help="With --throughput: this checkout's worker measures both revisions.")
    parser.add_argument("--options", default="{}", type=json.loads,
                        help="With --throughput: TrainConfig fields as JSON, e.g. '{\"backbone_dropout\": 0.0}' "
                             "(the worker's default is the checkpoint's dropout, 0.1).")
    parser.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR", ""), help="With --throughput.")
    args, train_args = parser.parse_known_args()
    train_args = [arg for arg in train_args if arg != "--"]
    seeds = [int(seed) for seed in args.seeds.split(",")]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from machine import append_results, results_heading
    from versus_hugging_face import write_review_sample

    work = tempfile.mkdtemp(prefix="kerasbert-revisions-")
    folders = {}
    for revision in (args.before, args.after):
        folders[revision] = os.path.join(work, revision.replace("/", "_"))
        os.makedirs(folders[revision])
        extract(revision, folders[revision])
    if args.throughput:
        reviews = write_review_sample(argparse.Namespace(data_dir=args.data_dir, train_examples=320,
                                                         inference_examples=640))
        seeds = [0]
    rows = []
    for round_number in range(1, args.rounds + 1):
        for seed in seeds:
            for revision in (args.before, args.after):
                output = os.path.join(work, "runs", f"{revision.replace('/', '_')}-seed{seed}-round{round_number}")
                worker_root = ROOT if args.this_worker else folders[revision]
                measured = (run_throughput(folders[revision], reviews, args.throughput, worker_root, args.options)
                            if args.throughput
                            else run(folders[revision], train_args, seed, output))
                result = {"revision": revision, "seed": seed, "round": round_number, **measured}
                rows.append(result)
                print(json.dumps(result), flush=True)
    measurement = (f"Second-pass throughput at {args.throughput} tokens (320 real train reviews, batch 16; inference 640, "
                   f"batch 64), measured by {'this checkout' if args.this_worker else 'each revision'}'s "
                   f"versus_hugging_face.py worker{f', options {json.dumps(args.options)}' if args.options else ''}"
                   if args.throughput
                   else f"`train.py {' '.join(train_args)}` on each revision")
    lines = [results_heading(), f"{measurement}, the revisions alternating.\n",
             "| revision | seed | round | test accuracy | train seq/s | eval seq/s |", "|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['revision']} | {row['seed']} | {row['round']} | error: {row['error']} | | |")
        else:
            accuracy = f"{row['accuracy']:.4f}" if "accuracy" in row else "-"
            lines.append(f"| {row['revision']} | {row['seed']} | {row['round']} | {accuracy} | "
                         f"{row['train']:.2f} | {row['eval']:.1f} |")
    append_results(args.results, lines)


if __name__ == "__main__":
    main()
