"""Choosing settings on validation alone: each variant (a set of `train.py` options)
is fine-tuned on the training part of train and scored on the validation reviews
carved from it. The test split is never read (`load_splits(with_test=False)`), so
nothing chosen here has seen it; `benchmarks/sweep_recipe.py` runs the sweep.

Every variant of a sweep sees the same carve (`split_seed`) and, with
`train_examples`, the same seeded subset of the training part, so two variants
differ only in their options and their run `seed` (init, order, dropout): paired
comparisons, with less noise than their separate accuracies.

Example (under a minute on a 2-core CPU, on a tiny subset):

>>> from kerasbert.job.config import TrainConfig
>>> row = validation_run(TrainConfig(data_dir="../shared/data/tensorflow_datasets", max_seq_length=32),
...                      "/tmp/sweep-example", train_examples=48, validation_examples=32)
[kerasbert ...] ...
>>> row["examples"], len(row["val_accuracy"])
({'train': 48, 'validation': 32}, 1)
"""

import dataclasses
import time

from kerasbert.splits import load_splits
from kerasbert.job.training import ResumableJob, fine_tune

SPLIT_SEED = 42  # train.py's default seed: the carve its runs validate on, and `kerasbert adapt` leaves out


def validation_run(config, run_dir, train_examples=0, validation_examples=0, split_seed=SPLIT_SEED):
    """Fine-tune with `config` (its seed for init, order and dropout) on `train_examples` of the
    training part (0: all) and return the validation scores of every epoch and the time spent."""
    started = time.perf_counter()
    options = {**config.data_options(), "seed": split_seed, "max_train_examples": 0, "max_test_examples": 0}
    splits = load_splits(**options, with_test=False)
    splits = dataclasses.replace(splits, train=splits.train.sample(train_examples, split_seed),
                                 validation=splits.validation.sample(validation_examples, split_seed))
    tuned = fine_tune(ResumableJob(dataclasses.replace(config, output_dir=run_dir, overwrite=True), run_dir), splits)
    return {"val_accuracy": tuned.history["val_accuracy"], "val_loss": tuned.history["val_loss"],
            "epochs_run": len(tuned.state.history), "train_seconds": tuned.throughput.train_seconds,
            "train_sequences_per_second": tuned.throughput.sequences_per_second,
            "wall_seconds": time.perf_counter() - started, "examples": {"train": len(splits.train),
                                                                        "validation": len(splits.validation)}}
