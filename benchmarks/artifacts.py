"""Accuracy, size, latency and throughput of every exported artifact, side by side
with the Keras model, on IMDB test reviews.

    python benchmarks/artifacts.py --run runs/latest --export saved_models/kerasbert --version 1 \
        --examples 2000 --results benchmarks/artifacts.md

Latency: one review per call (p50/p95 over --latency-reviews reviews, default threads).
Throughput: batches of 64 (the strings-in TFLite model takes one review per call) on all cores.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from kerasbert.job.exporting import parity_examples  # noqa: E402
from kerasbert.job.rundir import resolved  # noqa: E402
from kerasbert.deploy.predict import load_predictor  # noqa: E402
from machine import results_heading  # noqa: E402


def size_mib(path):
    if os.path.isfile(path):
        return os.path.getsize(path) / 2**20
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names) / 2**20


def measure(name, path, texts, labels, latency_reviews):
    predictor = load_predictor(path)
    predictor.predict_probabilities(list(texts[:2]))  # warm-up: tracing, allocation
    started = time.perf_counter()
    probabilities = np.concatenate([predictor.predict_probabilities(list(texts[i:i + 64]))
                                    for i in range(0, len(texts), 64)])
    throughput = len(texts) / (time.perf_counter() - started)
    latencies = []
    for text in texts[:latency_reviews]:
        started = time.perf_counter()
        predictor.predict_probabilities([text])
        latencies.append((time.perf_counter() - started) * 1000)
    return {"artifact": name, "accuracy": float(np.mean(probabilities.argmax(1) == labels)),
            "size_mib": size_mib(path), "p50_ms": float(np.percentile(latencies, 50)),
            "p95_ms": float(np.percentile(latencies, 95)), "throughput": throughput}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--export", default="saved_models/kerasbert")
    parser.add_argument("--version", default="1")
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--latency-reviews", type=int, default=100)
    parser.add_argument("--results", default="benchmarks/artifacts.md")
    args = parser.parse_args()
    class_names = load_predictor(os.path.join(args.run, "model.keras")).class_names
    texts, labels = parity_examples(resolved(args.run), args.examples, class_names)
    tflite = os.path.join(args.export, "tflite", args.version)
    artifacts = [("Keras .keras (as trained)", os.path.join(args.run, "model.keras")),
                 ("SavedModel (TF Serving)", os.path.join(args.export, args.version))]
    artifacts += [(f"TFLite {name[:-7]}", os.path.join(tflite, name))
                  for name in sorted(os.listdir(tflite)) if name.endswith(".tflite")]
    rows = []
    for name, path in artifacts:
        rows.append(measure(name, path, texts, labels, args.latency_reviews))
        print(rows[-1], flush=True)
    keras_throughput = rows[0]["throughput"]
    with open(args.results, "a") as results:
        results.write(results_heading() + "\n"
                      f"{len(texts)} seeded IMDB test reviews. Latency: batch 1, default threads "
                      f"({args.latency_reviews} reviews); throughput: batches of 64.\n\n"
                      "| artifact | accuracy | size MiB | p50 ms | p95 ms | reviews/s | x Keras |\n"
                      "|---|---|---|---|---|---|---|\n")
        for row in rows:
            results.write(f"| {row['artifact']} | {row['accuracy']:.4f} | {row['size_mib']:.1f} | "
                          f"{row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['throughput']:.1f} | "
                          f"{row['throughput'] / keras_throughput:.2f} |\n")


if __name__ == "__main__":
    main()
