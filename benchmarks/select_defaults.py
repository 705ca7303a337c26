"""Choose training defaults on validation accuracy only (the test split is never read).

Fine-tunes one configuration per candidate of a sweep on the same seeded
subset of IMDB train, and appends each one's validation accuracy to a results file.

    python benchmarks/select_defaults.py --data-dir ../shared/data/tensorflow_datasets \
        --sweep truncation --max-train-examples 6000 --results benchmarks/select_defaults.md
"""

import argparse
import dataclasses
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from kerasbert import data  # noqa: E402
from kerasbert.job.config import TrainConfig  # noqa: E402
from kerasbert.job.training import fine_tune  # noqa: E402
from machine import results_heading  # noqa: E402

SWEEPS = {
    "learning-rate": [{"max_seq_length": 128, "learning_rate": rate, "truncation": "head+tail"}
                      for rate in (5e-5, 1e-4, 2e-4)],
    # At length 128 most IMDB reviews are cut, so the choice of kept tokens shows most.
    "truncation": [{"max_seq_length": 128, "learning_rate": 5e-5, "truncation": truncation}
                   for truncation in ("head+tail", "head", "tail")],
    # The default length: head+tail keeps the last 126 tokens here too.
    "truncation-256": [{"max_seq_length": 256, "learning_rate": 5e-5, "truncation": truncation}
                       for truncation in ("head+tail", "tail")],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("TFDS_DATA_DIR", ""))
    parser.add_argument("--sweep", choices=sorted(SWEEPS), default="truncation")
    parser.add_argument("--max-train-examples", type=int, default=6000)
    parser.add_argument("--results", default="benchmarks/select_defaults.md")
    args = parser.parse_args()
    base = TrainConfig(data_dir=args.data_dir, max_train_examples=args.max_train_examples, max_test_examples=1)
    splits = data.load_splits(**base.data_options())
    with open(args.results, "a") as results:
        results.write(results_heading() + "\n"
                      f"{len(splits.train)} training and {len(splits.validation)} validation examples "
                      f"(seed {base.seed}), 1 epoch, batch {base.batch_size}.\n\n"
                      "| max_seq_length | learning_rate | truncation | validation accuracy | minutes |\n"
                      "|---|---|---|---|---|\n")
        for candidate in SWEEPS[args.sweep]:
            config = dataclasses.replace(base, **candidate, output_dir=tempfile.mkdtemp(prefix="kerasbert-sweep-"))
            started = time.perf_counter()
            tuned = fine_tune(config, splits, config.output_dir)
            accuracy = tuned.history["val_accuracy"][-1]
            results.write(f"| {config.max_seq_length} | {config.learning_rate:g} | {config.truncation} | "
                          f"{accuracy:.4f} | {(time.perf_counter() - started) / 60:.1f} |\n")
            results.flush()


if __name__ == "__main__":
    main()
