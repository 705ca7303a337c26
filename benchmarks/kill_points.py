"""SIGKILL the README's smoke job at random moments: `train.py --quick`, its export and a
predict. After every kill, each file kerasbert has published must be whole, and the same
command run again must complete (and leave only whole files).

The moments are drawn (seeded) uniformly over the three commands' uninterrupted wall
time, so they land in proportion to where the time goes: start-up, training and its
backups, evaluation, model.keras, the SavedModel and TFLite exports, the predictions.
Each killed command gets a fresh folder; an export or predict kill starts from the
uninterrupted run.

    python benchmarks/kill_points.py --kills 20 -- --data-dir ../shared/data/tensorflow_datasets
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

from machine import append_results, results_heading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REVIEWS = ["A moving, funny and beautifully acted film.", "Two hours I will never get back.",
           "The plot was thin but the music carried it."] * 40


def commands(folder, run, train_options):
    """The smoke job's three commands, writing into `folder` (the run at `run`)."""
    cli = os.path.join(os.path.dirname(sys.executable), "kerasbert")
    return {
        "train": [sys.executable, os.path.join(ROOT, "train.py"), "--quick", "--output-dir", run, *train_options],
        "export": [sys.executable, os.path.join(ROOT, "export.py"), "--run", run, "--export-root",
                   os.path.join(folder, "saved_models")],
        "predict": [cli, "predict", "--model", os.path.join(run, "model.keras"), "--input",
                    os.path.join(folder, "reviews.txt"), "--output", os.path.join(folder, "predictions.jsonl")],
    }


def run(command, kill_after=None):
    """Run a command to its end, or SIGKILL it `kill_after` seconds in; (exit status, seconds, output)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        output, _ = process.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return process.returncode, time.perf_counter() - started, output


def unwhole_files(root):
    """Published files below `root` that are not whole, as "path: why". Temporary files
    (`.tmp-*`) and unpublished version folders (`.partial-*`) are not published."""
    problems = []
    for folder, folders, names in os.walk(root):
        folders[:] = [name for name in folders if not name.startswith((".partial-", ".retired-"))]
        for name in names:
            path = os.path.join(folder, name)
            why = None if name.startswith(".tmp-") or os.path.islink(path) else damage(path)
            if why:
                problems.append(f"{os.path.relpath(path, root)}: {why}")
        if os.path.basename(folder).isdigit() and "saved_model.pb" not in names and "variables" in folders:
            problems.append(f"{os.path.relpath(folder, root)}: a SavedModel version without saved_model.pb")
    return problems


def damage(path):
    """Why a published file is not whole, or None."""
    try:
        with open(path, "rb") as file:
            content = file.read()
        if path.endswith(".json"):
            json.loads(content)
        elif path.endswith(".jsonl"):
            for line in content.decode().splitlines():
                json.loads(line)
        elif path.endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
                if bad:
                    return f"member {bad} is damaged"
        elif path.endswith(".h5"):
            import h5py

            with h5py.File(path, "r") as weights:
                weights.visit(lambda _: None)
        elif path.endswith(".png") and not (content.startswith(b"\x89PNG") and content.endswith(b"IEND\xaeB`\x82")):
            return "not a whole PNG"
        elif path.endswith(".tflite") and content[4:8] != b"TFL3":
            return "not a TFLite flatbuffer"
        elif path.endswith((".pb", ".md", ".txt")) and not content:
            return "empty"
    except Exception as error:  # whatever the reader raises, the file is not whole
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--work-dir", default="", help="Where the runs go (default: a temporary folder).")
    parser.add_argument("--results", default="benchmarks/kill_points.md")
    parser.add_argument("train_options", nargs="*", help="Options for train.py, after --.")
    args = parser.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="kill-points-")

    base = os.path.join(work, "uninterrupted")
    base_run = prepare(base)
    durations = {}
    for stage, command in commands(base, base_run, args.train_options).items():
        status, durations[stage], output = run(command)
        if status:
            raise SystemExit(f"the uninterrupted {stage} failed:\n{output[-3000:]}")
        print(json.dumps({"uninterrupted": stage, "seconds": round(durations[stage], 1)}), flush=True)

    rows = []
    total = sum(durations.values())
    draws = random.Random(args.seed)
    for index, moment in enumerate(sorted(draws.uniform(0, total) for _ in range(args.kills))):
        stage, offset = stage_at(moment, durations)
        folder = os.path.join(work, f"kill-{index + 1:02d}")
        run_dir = prepare(folder, base_run if stage != "train" else None)
        command = commands(folder, run_dir, args.train_options)[stage]
        killed_status, _, _ = run(command, kill_after=offset)
        after_kill = unwhole_files(folder)
        status, seconds, output = run(command)
        after_rerun = unwhole_files(folder)
        rows.append({"kill": index + 1, "stage": stage, "at_seconds": round(offset, 1),
                     "killed": killed_status == -9, "unwhole_after_kill": after_kill, "rerun_status": status,
                     "rerun_seconds": round(seconds, 1), "unwhole_after_rerun": after_rerun,
                     "rerun_error": output.strip().splitlines()[-1] if status else ""})
        print(json.dumps(rows[-1]), flush=True)
    write_results(args, durations, rows)
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)


def prepare(folder, finished_run=None):
    """A fresh folder with the predict input, holding a copy of `finished_run` if given; the run's path."""
    os.makedirs(folder)
    with open(os.path.join(folder, "reviews.txt"), "w") as file:
        file.write("\n".join(REVIEWS) + "\n")
    run_dir = os.path.join(folder, "run")
    if finished_run:
        shutil.copytree(finished_run, run_dir, symlinks=True)
    return run_dir


def stage_at(moment, durations):
    """(stage, seconds into it) of a moment on the three commands' joint timeline."""
    for stage, seconds in durations.items():
        if moment < seconds:
            return stage, moment
        moment -= seconds
    return stage, seconds


def write_results(args, durations, rows):
    complete = sum(row["rerun_status"] == 0 and not row["unwhole_after_rerun"] for row in rows)
    whole = sum(not row["unwhole_after_kill"] for row in rows)
    lines = [results_heading(),
             "Uninterrupted: " + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in durations.items()) + ".",
             f"**{whole} of {len(rows)}** kills left every published file whole; **{complete} of {len(rows)}** "
             "reruns of the same command completed with every file whole.\n",
             "| kill | command | SIGKILL at (s) | killed | published files not whole after the kill | rerun "
             "| rerun (s) | not whole after the rerun |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['kill']} | {row['stage']} | {row['at_seconds']} | {'yes' if row['killed'] else 'ended'} "
                     f"| {', '.join(row['unwhole_after_kill']) or 'none'} "
                     f"| {'completed' if row['rerun_status'] == 0 else row['rerun_error']} | {row['rerun_seconds']} "
                     f"| {', '.join(row['unwhole_after_rerun']) or 'none'} |")
    if not os.path.exists(args.results):
        lines.insert(0, "# Kill points: SIGKILL across the smoke job, then the same command again\n\n"
                        "Written by `benchmarks/kill_points.py`; each run appends a section.")
    append_results(args.results, lines)


if __name__ == "__main__":
    main()
