"""A make target timed end to end on a fresh clone, as a user runs it: `git clone` of one
revision into a scratch folder, `make setup` there (a new .venv from the pinned requirements and
the offline weights, without pip's cache unless `--pip-cache`), then `make <target>` (`train`
and `train-best`: fine-tune, evaluate on test, export; `test`: the suite). The wall time of each
part, the run's metrics (when the target trains) and the peak memory are appended to `--results`
under a heading naming the machine, the date and the command.

    python benchmarks/fresh_clone.py --target train-best -- --seed 43

Arguments after `--` become the target's ARGS (options for train.py). The scratch folder gets a
link `shared` to this project's `../shared`, so the clone finds the IMDB copy where a user's
would; it is kept afterwards (the run directory and the exported models are in it).
"""

import argparse
import os
import resource
import shlex
import subprocess
import tempfile
import time

from default_run import measure_table, run_table
from machine import STARTED_ENVIRONMENT, append_results, results_heading

from kerasbert.files import read_json

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--revision", default="HEAD", help="The commit to clone (this repository's history).")
    parser.add_argument("--target", default="train-best", help="The make target to time after `make setup`.")
    parser.add_argument("--scratch", default=tempfile.gettempdir(), help="Where the scratch folder is made.")
    parser.add_argument("--pip-cache", action=argparse.BooleanOptionalAction, default=False,
                        help="Let `make setup` use pip's cache (off: every package downloaded, as on a new machine).")
    parser.add_argument("--results", default="benchmarks/best_recipe.md")
    parser.add_argument("make_args", nargs="*", help="The target's ARGS (after --).")
    args = parser.parse_args()
    shared = os.path.join(os.path.dirname(PROJECT), "shared")
    if not os.path.isdir(shared):
        parser.error(f"{shared} is missing: the clone needs the IMDB copy beside it")
    if not os.path.isdir(args.scratch):
        parser.error(f"--scratch {args.scratch} is not a directory")
    revision = git("rev-parse", "--verify", "--quiet", f"{args.revision}^{{commit}}")
    if revision is None:
        parser.error(f"--revision {args.revision} is not a commit of {PROJECT}")

    folder = tempfile.mkdtemp(prefix="kerasbert-fresh-", dir=args.scratch)
    os.symlink(shared, os.path.join(folder, "shared"))
    clone = os.path.join(folder, "kerasbert")
    print(f"fresh clone of {revision[:7]} in {clone}", flush=True)
    started = time.perf_counter()
    run(["git", "clone", "--quiet", "--no-checkout", PROJECT, clone])
    run(["git", "-C", clone, "checkout", "--quiet", revision])
    cloned = time.perf_counter()
    run(["make", "-C", clone, "setup"], {} if args.pip_cache else {"PIP_NO_CACHE_DIR": "1"})
    set_up = time.perf_counter()
    target = ["make", "-C", clone, args.target, f"ARGS={shlex.join(args.make_args)}"]
    run(target)
    finished = time.perf_counter()

    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    target_minutes = (finished - set_up) / 60
    metrics_path = os.path.join(clone, "runs", "latest", "metrics.json")
    metrics = read_json(metrics_path) if os.path.isfile(metrics_path) else None  # `make test` trains nothing
    of_which = ""
    if metrics:
        train_minutes = metrics["timing"]["total_seconds"] / 60
        of_which = f": train.py {train_minutes:.1f}, the rest (export, start-ups) {target_minutes - train_minutes:.1f}"
    rows = [
        ("clone", f"{(cloned - started) / 60:.1f} min"),
        ("`make setup`", f"{(set_up - cloned) / 60:.1f} min ({'with' if args.pip_cache else 'without'} pip's cache)"),
        (f"`make {shlex.join(target[3:])}`", f"{target_minutes:.1f} min{of_which}"),
        (f"**clone to the end of `make {args.target}`**", f"**{(finished - started) / 60:.1f} min**"),
        ("peak resident memory", f"{peak_gib:.2f} GiB"),
    ]
    table = run_table(metrics, rows) if metrics else measure_table(rows)
    append_results(args.results, [results_heading(), f"Revision {revision[:7]}, cloned into `{clone}`.\n", *table])


def user_environment():
    """This process's environment as it started (before kerasbert's defaults), without an activated
    virtual environment or a data directory, as a user's shell on a fresh clone has it."""
    environment = {name: value for name, value in STARTED_ENVIRONMENT.items()
                   if name not in ("VIRTUAL_ENV", "TFDS_DATA_DIR")}
    if "VIRTUAL_ENV" in os.environ:
        venv_bin = os.path.join(os.environ["VIRTUAL_ENV"], "bin")
        environment["PATH"] = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    return environment


def git(*arguments):
    """The output of a git command in this project, or None when it fails."""
    completed = subprocess.run(["git", "-C", PROJECT, *arguments], capture_output=True, text=True)
    return completed.stdout.strip() if completed.returncode == 0 else None


def run(command, more_environment=None):
    completed = subprocess.run(command, env={**user_environment(), **(more_environment or {})})
    if completed.returncode:
        raise SystemExit(f"{shlex.join(command)} failed with exit status {completed.returncode}")


if __name__ == "__main__":
    main()
