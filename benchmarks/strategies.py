"""Training throughput of the default strategy against MirroredStrategy over logical CPU
devices, side by side (A B A B) in one invocation, each run its own `train.py` process.

    python benchmarks/strategies.py --data-dir ../shared/data/tensorflow_datasets
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from machine import results_heading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATEGIES = {"default": ["--strategy", "default"],
              "mirrored, 2 logical CPUs": ["--strategy", "mirrored", "--logical-cpu-devices", "2"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR", ""))
    parser.add_argument("--train-examples", type=int, default=800)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--results", default="benchmarks/strategies.md")
    args = parser.parse_args()
    common = ["--data-dir", args.data_dir, "--max-train-examples", str(args.train_examples),
              "--validation-split", "0", "--max-test-examples", "64", "--max-seq-length", str(args.max_seq_length)]
    speeds = {name: [] for name in STRATEGIES}
    for _ in range(args.rounds):
        for name, options in STRATEGIES.items():
            run = tempfile.mkdtemp(prefix="kerasbert-strategy-")
            subprocess.run([sys.executable, "train.py", "--output-dir", os.path.join(run, "run"), *common, *options],
                           cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(os.path.join(run, "run", "metrics.json")) as file:
                speeds[name].append(json.load(file)["timing"]["train_sequences_per_second"])
            print(name, speeds[name][-1], flush=True)
    default = statistics.median(speeds["default"])
    lines = [results_heading(),
             f"{args.train_examples} training reviews, length "
             f"{args.max_seq_length}, batch 16 (global), bf16, medians of {args.rounds} interleaved rounds.\n",
             "| strategy | train sequences/s | runs | ratio to default |", "|---|---|---|---|"]
    for name, values in speeds.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.2f} | {', '.join(f'{v:.2f}' for v in values)} | {median / default:.2f} |")
    with open(args.results, "a") as results:
        results.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
