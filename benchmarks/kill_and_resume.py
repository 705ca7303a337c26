"""Kill a training run with SIGKILL at random moments, restart it with the same command each
time, and compare the finished run with an uninterrupted one.

The kill moments are drawn (seeded) uniformly over the uninterrupted run's wall
time and counted from the benchmark's start, so a kill can land anywhere: during
start-up, just before or just after a backup, or during the test evaluation. The
training lost to a kill is the time since the last backup. Each attempt's output
goes to `<output-dir>.attempt-<n>.log`.

    python benchmarks/kill_and_resume.py --output-dir runs/kill-benchmark \\
        --baseline runs/default-benchmark -- --data-dir ../shared/data/tensorflow_datasets
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time

from machine import results_heading

from kerasbert.files import read_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="runs/kill-benchmark")
    parser.add_argument("--baseline", default="runs/default-benchmark",
                        help="Run directory of an uninterrupted run with the same options.")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--results", default="benchmarks/kill_and_resume.md")
    parser.add_argument("train_options", nargs="*", help="Options for train.py, after --.")
    args = parser.parse_args()

    baseline_metrics = os.path.join(args.baseline, "metrics.json")
    if not os.path.isfile(baseline_metrics):
        print(f"error: --baseline {args.baseline} has no metrics.json: run train.py uninterrupted there first",
              file=sys.stderr)
        raise SystemExit(2)
    baseline = read_json(baseline_metrics)
    rng = random.Random(args.seed)
    kill_moments = sorted(rng.uniform(0, baseline["timing"]["total_seconds"]) for _ in range(args.kills))
    command = [sys.executable, "train.py", "--output-dir", args.output_dir, *args.train_options]
    state_file = os.path.join(args.output_dir, "backup", "state.json")
    kills, started = [], time.perf_counter()
    for attempt, moment in enumerate(kill_moments + [None], start=1):
        log_path = f"{args.output_dir}.attempt-{attempt}.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            if moment is None:
                process.wait()
                break
            attempt_started = time.time()
            while process.poll() is None and time.perf_counter() - started < moment:
                time.sleep(0.5)
            if process.poll() is not None:  # finished (or failed) before its kill moment
                break
            process.send_signal(signal.SIGKILL)
            killed_at = time.time()
            process.wait()
        backup_time = backup_written_at(state_file)
        kills.append({"attempt": attempt, "killed_at_minute": round(moment / 60, 1),
                      "lost_seconds": round(killed_at - max(backup_time, attempt_started)),
                      "resumes_at_global_step": backed_up_step(state_file)})
        print(json.dumps(kills[-1]), flush=True)
    total = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"the last attempt failed with status {process.returncode}; see {log_path}")
    metrics = read_json(os.path.join(args.output_dir, "metrics.json"))
    write_results(args, command, kills, total, metrics, baseline)


def backed_up_step(state_file):
    try:
        return read_json(state_file)["global_step"]
    except (OSError, ValueError, KeyError):
        return -1


def backup_written_at(state_file):
    try:
        return os.path.getmtime(state_file)
    except OSError:
        return 0.0


def write_results(args, command, kills, total, metrics, baseline):
    extra = total - baseline["timing"]["total_seconds"]
    lines = [
        results_heading(),
        f"Each attempt ran `{' '.join(command[1:])}`.\n",
        "| attempt | killed at minute (since the first start) | seconds of work lost (since the last backup "
        "or the attempt's start) | next attempt resumes from global step |",
        "|---|---|---|---|",
    ]
    lines += [f"| {k['attempt']} | {k['killed_at_minute']} | {k['lost_seconds']} | {k['resumes_at_global_step']} |"
              for k in kills]
    lines += [
        "",
        "| measure | killed {0} times | uninterrupted ({1}) |".format(len(kills), args.baseline),
        "|---|---|---|",
        f"| total wall minutes | {total / 60:.1f} | {baseline['timing']['total_seconds'] / 60:.1f} |",
        f"| extra wall minutes | {extra / 60:+.1f} | |",
        f"| optimizer steps | {metrics['optimizer_steps']} | {baseline.get('optimizer_steps', 'n/a')} |",
        f"| test accuracy | {metrics['test']['accuracy']:.4f} | {baseline['test']['accuracy']:.4f} |",
        f"| accuracy difference (points) | {100 * (metrics['test']['accuracy'] - baseline['test']['accuracy']):+.2f} | |",
    ]
    with open(args.results, "a") as results:
        results.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
