"""How long the end of an epoch waits for tf.data: autotuning on (TensorFlow's default)
against off (`kerasbert.data.pipeline_options`), side by side (A B A B) in one process.

Each trial runs kerasbert's own tokenizing pipeline over real IMDB train reviews for
`--batches` batches, with a step that keeps both cores busy for `--step-seconds`
(about one training step at length 256 here), then times what `fit`, `evaluate` and
`predict` do when the data runs out: drop the iterator. With autotuning on, that
sometimes waits, CPU idle, for the autotuning thread's next scheduled wake-up.

    python benchmarks/iterator_teardown.py --data-dir ../shared/data/tensorflow_datasets
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kerasbert  # noqa: E402,F401  (before TensorFlow, as in a user's run: it may turn on oneDNN)
import tensorflow as tf  # noqa: E402

from kerasbert import data  # noqa: E402
from kerasbert.errors import KerasbertError  # noqa: E402
from kerasbert.preprocessing import ReviewPreprocessor  # noqa: E402
from kerasbert.presets import resolve_preset  # noqa: E402
from machine import results_heading  # noqa: E402

STALL_SECONDS = 0.5


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR", ""))
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--step-seconds", type=float, default=1.4)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--results", default="benchmarks/iterator_teardown.md")
    args = parser.parse_args()
    if args.batches < 1 or args.rounds < 1 or args.step_seconds < 0:
        parser.error("--batches and --rounds must be at least 1, --step-seconds not negative")
    try:
        train, _, _ = data.read_tfds("imdb_reviews", args.data_dir)
    except KerasbertError as error:
        parser.error(str(error))
    reviews = train.sample(16 * args.batches, seed=1234)
    preprocessor = ReviewPreprocessor.from_preset(resolve_preset("all_minilm_l6_v2_offline"), sequence_length=256)
    arms = {"autotune on (TensorFlow default)": True, "autotune off (kerasbert)": False}
    teardowns = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, autotune in arms.items():
            options = tf.data.Options()
            options.autotune.enabled = autotune
            dataset = data.evaluation_dataset(reviews, preprocessor, 16).with_options(options)
            teardowns[name].append(epoch_end_seconds(dataset, args.step_seconds))
            print(f"{name}: {teardowns[name][-1]:.3f} s", flush=True)

    lines = [results_heading(),
             f"{args.rounds} interleaved rounds of {args.batches} batches "
             f"of 16 real reviews, {args.step_seconds} s of busy step each. A stall is a teardown over "
             f"{STALL_SECONDS} s.\n",
             "| pipeline | stalls | median s | max s | total s | each trial, s |", "|---|---|---|---|---|---|"]
    for name, values in teardowns.items():
        stalls = sum(value > STALL_SECONDS for value in values)
        lines.append(f"| {name} | {stalls} of {len(values)} | {statistics.median(values):.3f} | {max(values):.2f} | "
                     f"{sum(values):.1f} | {', '.join(f'{value:.2f}' for value in values)} |")
    with open(args.results, "a") as results:
        results.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def epoch_end_seconds(dataset, step_seconds):
    """Consume `dataset` with busy steps, then time dropping the exhausted iterator."""
    iterator = iter(dataset)
    for _ in iterator:
        busy(step_seconds)
    started = time.perf_counter()
    del iterator
    return time.perf_counter() - started


def busy(seconds):
    matrix = tf.random.normal([512, 512])
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        tf.linalg.matmul(matrix, matrix).numpy()


if __name__ == "__main__":
    main()
