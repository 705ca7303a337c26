"""TensorFlow's matrix products with and without oneDNN, side by side on this CPU, in float32:
MiniLM's projections (forward, input and weight gradients) and attention's batched products
(scores and weighted sum) at the encoder's shapes, and 2048 x 2048.

On Linux, TensorFlow runs oneDNN's kernels by default only on CPUs with VNNI, bf16 or AMX
instructions (Cascade Lake, Alder Lake, Zen 4 and newer); elsewhere Eigen's, unless TF_ENABLE_ONEDNN_OPTS=1 is set before TensorFlow loads,
which importing kerasbert first does. Each setting runs in its own process (TensorFlow reads
it once), alternating, `--rounds` times; the median counts.

    python benchmarks/onednn.py --lengths 256,512
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

SETTINGS = {"0": "Eigen (TF_ENABLE_ONEDNN_OPTS=0)", "1": "oneDNN (TF_ENABLE_ONEDNN_OPTS=1)"}


def measure(lengths, batch):
    """{"onednn": whether this process runs oneDNN's kernels, "rates": TFLOP/s by product group}."""
    import tensorflow as tf
    from versus_hugging_face import encoder_products, matmul_rate

    from kerasbert.hardware import onednn_is_on

    rates = {}
    for length in lengths:
        products = encoder_products(batch, length)
        rates[f"projections at {length} tokens"] = matmul_rate(products[:12], tf.float32, repeats=5)
        rates[f"attention's batched products at {length} tokens"] = matmul_rate(products[12:14], tf.float32,
                                                                                  repeats=5)
    rates["2048 x 2048"] = matmul_rate([((2048, 2048), (2048, 2048), False, False)], tf.float32, repeats=10)
    return {"onednn": onednn_is_on(), "rates": rates}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="256,512")
    parser.add_argument("--batch", type=int, default=16, help="Sequences per batch, as in training.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--results", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "onednn.md"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    lengths = [int(length) for length in args.lengths.split(",")]
    if args.worker:
        print(json.dumps(measure(lengths, args.batch)))
        return
    runs = {setting: [] for setting in SETTINGS}
    for round_ in range(args.rounds):
        for setting in SETTINGS:
            environment = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting, "TF_CPP_MIN_LOG_LEVEL": "2"}
            completed = subprocess.run([sys.executable, __file__, "--worker", "--lengths", args.lengths, "--batch",
                                        str(args.batch)], env=environment, capture_output=True, text=True, check=True)
            result = json.loads(completed.stdout.splitlines()[-1])
            if result["onednn"] != (setting == "1"):
                raise SystemExit(f"TF_ENABLE_ONEDNN_OPTS={setting} did not take: oneDNN {result['onednn']}")
            runs[setting].append(result["rates"])
            print(f"round {round_ + 1}, {SETTINGS[setting]}: {result['rates']}", flush=True)
    from machine import append_results, results_heading

    median = {setting: {name: statistics.median(run[name] for run in results) for name in results[0]}
              for setting, results in runs.items()}
    append_results(args.results, [
        results_heading(),
        f"float32 TFLOP/s, batch {args.batch}, median of {args.rounds} alternating rounds (each setting in its own "
        "process); projections: the 4 products of a layer forward, with their input and weight gradients; "
        "attention: scores and weighted sum, [batch x 12 heads, length, 32].", "",
        f"| products | {' | '.join(SETTINGS.values())} | oneDNN / Eigen |", "|---|---|---|---|",
        *(f"| {name} | {median['0'][name]:.3f} | {median['1'][name]:.3f} | {median['1'][name] / median['0'][name]:.2f}x |"
          for name in median["0"])])


if __name__ == "__main__":
    main()
