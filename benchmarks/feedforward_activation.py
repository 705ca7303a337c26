"""The feed-forward activation's cost, side by side: the same classifier predicting
with MiniLM's exact GELU (what kerasbert computes for it) and with KerasHub's tanh
approximation, alternating (A B A B), each measurement in its own process.

    python benchmarks/feedforward_activation.py --data-dir ../shared/data/tensorflow_datasets
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/feedforward_activation.py ...  # as an AVX2-only CPU

640 real IMDB train reviews sorted by length, batches of 64, at most 256 tokens;
one warm-up pass, then the median of 2 timed passes per process.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FORMS = ("gelu", "gelu_approximate")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR", ""))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mixed-precision", default="auto")
    parser.add_argument("--results", default="benchmarks/feedforward_activation.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.data_dir, args.worker, args.mixed_precision)))
        return
    rows = []
    for round_ in range(1, args.rounds + 1):
        for form in FORMS:
            completed = subprocess.run([sys.executable, __file__, "--worker", form, "--data-dir", args.data_dir,
                                        "--mixed-precision", args.mixed_precision], capture_output=True, text=True)
            if completed.returncode:
                raise SystemExit(f"{form} worker failed:\n{completed.stderr[-3000:]}")
            rows.append({"form": form, "round": round_, **json.loads(completed.stdout.splitlines()[-1])})
            print(json.dumps(rows[-1]), flush=True)
    from machine import append_results, results_heading

    speed = {form: statistics.median(row["reviews_per_second"] for row in rows if row["form"] == form)
             for form in FORMS}
    append_results(args.results, [
        results_heading(), f"Precision: {rows[0]['policy']}; medians of {args.rounds} alternating rounds.\n",
        "| feed-forward activation | inference reviews/s |", "|---|---|",
        *(f"| {form} | {speed[form]:.1f} |" for form in FORMS),
        f"\nExact over approximate: **{speed['gelu'] / speed['gelu_approximate']:.2f}x**.\n",
        "Raw measurements:\n\n```\n" + "\n".join(json.dumps(row) for row in rows) + "\n```"])


def measure(data_dir, form, mixed_precision):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from kerasbert.backbone import set_feedforward_activation
    from kerasbert.data import evaluation_dataset, read_tfds
    from kerasbert.model import TextClassifier
    from kerasbert.texts import LabeledTexts

    train, _, _ = read_tfds("imdb_reviews", data_dir)
    picked = random.Random(1234).sample(range(len(train)), 640)
    reviews = LabeledTexts(train.texts[picked], train.labels[picked]).sorted_by_length()
    classifier = TextClassifier.from_preset("all_minilm_l6_v2_offline", num_classes=2, precision=mixed_precision)
    preprocessor = classifier.preprocessor
    assert classifier.feedforward_activation == "gelu"  # MiniLM's config.json: hidden_act "gelu"
    if form == "gelu_approximate":
        from keras_hub.src.utils.keras_utils import gelu_approximate  # what KerasHub's BERT computes

        set_feedforward_activation(classifier.backbone, gelu_approximate)
    batches = evaluation_dataset(reviews, preprocessor, 64).cache()
    classifier.predict(batches, verbose=0)
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        classifier.predict(batches, verbose=0)
        seconds.append(time.perf_counter() - started)
    return {"reviews_per_second": len(reviews) / statistics.median(seconds), "policy": classifier.dtype_policy.name}


if __name__ == "__main__":
    main()
