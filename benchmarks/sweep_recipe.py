"""The recipe sweep: variants of the fine-tuning options scored on validation reviews
carved from train, never on test (`kerasbert.job.sweep`), each with every seed, the
variants alternating within a seed. Results go to benchmarks/sweep_recipe.md with
the machine, the command and the date.

    python benchmarks/sweep_recipe.py --seeds 42,43 --train-examples 5000 \
        --variant "minilm-256=" \
        --variant "adapted-256=--preset adapted/minilm-imdb" \
        --variant "minilm-512=--max-seq-length 512"

A variant is NAME=OPTIONS, where OPTIONS are train.py options; options after `--`
apply to every variant. The validation set is train.py's (10% of train, seed 42),
the set `kerasbert adapt` leaves out of adaptation.
"""

import argparse
import os
import shlex
import statistics
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_variant(text):
    name, _, options = text.partition("=")
    if not name:
        raise SystemExit(f"a variant is NAME=OPTIONS, got {text!r}")
    return name, shlex.split(options)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", type=parse_variant, required=True)
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--train-examples", type=int, default=0, help="Seeded subset of the training part (0: all).")
    parser.add_argument("--validation-examples", type=int, default=0, help="Seeded subset of validation (0: all).")
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "sweep_recipe.md"))
    args, common = parser.parse_known_args()
    common = [arg for arg in common if arg != "--"]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from machine import append_results, results_heading

    from kerasbert.errors import KerasbertError
    from kerasbert.job.arguments import config_from_args
    from kerasbert.job.sweep import validation_run

    heading = [results_heading(), f"Training part: {args.train_examples or 'all'} reviews; validation: "
               f"{args.validation_examples or 'all'} (train.py's carve); options for every variant: "
               f"`{shlex.join(common) or '(defaults)'}`.", "",
               "| variant | options | seed | validation accuracy by epoch | train seq/s | wall time |",
               "|---|---|---|---|---|---|"]
    append_results(args.results, heading)
    scores = {}
    # The runs (checkpoints, about half a GB each) go once their scores are in the results.
    with tempfile.TemporaryDirectory(prefix="kerasbert-sweep-") as work:
        for seed in [int(seed) for seed in args.seeds.split(",")]:
            for name, options in args.variant:
                try:
                    config = config_from_args([*common, *options, "--seed", str(seed)])
                    row = validation_run(config, os.path.join(work, f"{name}-{seed}"), args.train_examples,
                                         args.validation_examples)
                except KerasbertError as error:  # bad data or options: one line, as train.py says it
                    parser.error(str(error))
                scores.setdefault(name, []).append(row["val_accuracy"][-1])
                by_epoch = ", ".join(f"{value:.4f}" for value in row["val_accuracy"])
                append_results(args.results, [f"| {name} | `{shlex.join(options) or '(defaults)'}` | {seed} | {by_epoch} | "
                                              f"{row['train_sequences_per_second']:.1f} | "
                                              f"{row['wall_seconds'] / 60:.1f} min |"])
    summary = ["", "Mean validation accuracy (last epoch) over the seeds:", ""]
    summary += [f"- {name}: {statistics.mean(values):.4f} ({len(values)} seed(s))" for name, values in scores.items()]
    append_results(args.results, summary)


if __name__ == "__main__":
    main()
