"""Two workers streaming a sharded JSONL folder (issue 38), as users run them: two `train.py
--strategy multi-worker --streaming` processes on loopback with `TF_CONFIG`, SIGKILLed together
once the first backup is written, then the same two commands again, which resume and finish.

    python benchmarks/synthetic_reviews.py --rows 3000000 --shards 16 --format jsonl --gzip --length-scale 0.4 \\
        --output /tmp/synthetic/jsonl
    python benchmarks/synthetic_reviews.py --rows 200 --seed 1 --length-scale 0.4 --output /tmp/synthetic/test.csv
    python benchmarks/streaming_workers.py /tmp/synthetic/jsonl /tmp/synthetic/test.csv --steps 60

Per worker and run: the files it read and the training rows it counted (its log), the step it
went on from, its peak RSS, exit code and seconds; then the resumed run's first-step time and
throughput (the chief's metrics.json).
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "streaming.md")


def start_workers(cluster, folder, test_file, run_dir, args):
    processes = []
    for index in range(len(cluster["worker"])):
        command = [sys.executable, os.path.join(ROOT, "train.py"), "--strategy", "multi-worker", "--streaming", "on",
                   "--train-file", folder, "--test-file", test_file, "--class-names", "neg,pos",
                   "--steps-per-epoch", str(args.steps), "--backup-every-steps", str(args.backup_every_steps),
                   "--validation-split", "0.001", "--output-dir", run_dir, "--seed", "0"]
        log = open(os.path.join(os.path.dirname(run_dir), f"worker-{index}-{time.monotonic_ns()}.log"), "w+")
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        processes.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=env), log,
                          time.perf_counter()))
    return processes


def watch(processes, stop_when=lambda: False):
    """Wait for `processes` (or SIGKILL them all once `stop_when()`), sampling each one's peak RSS;
    per worker: its exit code, log, peak RSS (MiB) and seconds."""
    peaks, ended = [0.0] * len(processes), [None] * len(processes)
    while None in ended:
        if stop_when():
            for process, _, _ in processes:
                process.send_signal(signal.SIGKILL)
        for index, (process, _, started) in enumerate(processes):
            peaks[index] = max(peaks[index], peak_rss(process.pid))
            if ended[index] is None and process.poll() is not None:
                ended[index] = time.perf_counter() - started
        time.sleep(0.5)
    return [(process.returncode, read(log), peak, seconds)
            for (process, log, _), peak, seconds in zip(processes, peaks, ended)]


def read(log):
    log.flush()
    with open(log.name) as file:
        return file.read()


def peak_rss(pid):
    try:
        with open(f"/proc/{pid}/status") as file:
            return next(int(line.split()[1]) / 1024 for line in file if line.startswith("VmHWM"))
    except (FileNotFoundError, StopIteration):
        return 0.0


def backup_step(run_dir):
    try:
        with open(os.path.join(run_dir, "backup", "state.json")) as file:
            return json.load(file)["global_step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def found(pattern, text, default="-"):
    match = re.search(pattern, text)
    return match.group(1) if match else default


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a folder of JSONL shards")
    parser.add_argument("test_file")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--backup-every-steps", type=int, default=20)
    args = parser.parse_args()
    from machine import append_results, results_heading

    from kerasbert.distribution import loopback_cluster

    scratch = tempfile.mkdtemp(prefix="kerasbert-workers-")
    run_dir, cluster = os.path.join(scratch, "run"), loopback_cluster(2)
    killed = watch(start_workers(cluster, args.folder, args.test_file, run_dir, args),
                   stop_when=lambda: backup_step(run_dir) > 0)
    killed_at = backup_step(run_dir)
    finished = watch(start_workers(cluster, args.folder, args.test_file, run_dir, args))
    lines = [results_heading(), f"Two workers on loopback, `train.py` defaults (MiniLM, global batch 16, 256 tokens), "
             f"`--steps-per-epoch {args.steps} --backup-every-steps {args.backup_every_steps}`; both SIGKILLed once "
             f"the first backup (step {killed_at}) was written, then the same commands again.", "",
             "| run | worker | reads | training rows counted | went on from step | peak RSS (MiB) | exit | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for name, results in (("killed", killed), ("resumed", finished)):
        for index, (returncode, log, peak, seconds) in enumerate(results):
            reads, counted = found(r"reads (\d+ of \d+ files)", log), int(found(r"\] (\d+) training, ", log, 0))
            went_on_from = found(r"\(global step (\d+)\)", log, "0")
            lines.append(f"| {name} | {index} | {reads} | {counted:,} | {went_on_from} | {peak:,.0f} | {returncode} | "
                         f"{seconds:.0f} |")
    metrics = os.path.join(run_dir, "metrics.json")
    if os.path.exists(metrics):
        with open(metrics) as file:
            timing = json.load(file)["timing"]
        lines += ["", f"Resumed run (the chief's metrics.json): first step {timing['first_step_seconds']:.1f} s after "
                  f"the job's start, {timing['train_sequences_per_second']:.2f} training sequences/s."]
    append_results(RESULTS, lines)
    if any(returncode for returncode, *_ in finished):
        sys.exit(f"a resumed worker failed: see the logs in {scratch}")


if __name__ == "__main__":
    main()
