"""`kerasbert report <run dir>`: a run's config, metrics, timings and pictures in one
Markdown file (`report.md`, next to its PNGs) that reads well on GitHub.

The training curves are drawn from the run's TensorBoard events, so the
report shows exactly what TensorBoard shows.

`write_report("runs/latest")` writes the newest run's `report.md` and returns its
text, which starts with "# Run `<the run's name>`".
"""

import math
import os

import numpy as np
import tensorflow as tf

from kerasbert import files
from kerasbert.errors import KerasbertError, first_line
from kerasbert.hardware import Hardware
from kerasbert.job import plots, rundir
from kerasbert.job.rundir import TRAINING_CURVES_PNG
from kerasbert.progress import phase


def read_scalars(folder):
    """{tag: (steps, values)} of the numeric scalar summaries in a folder's event files.

    A file that ends in a damaged record (the writer was killed mid-record) is
    read up to it, as TensorBoard reads it, with a warning; the report must not
    fail on every later attempt for the last event of a killed run.
    """
    series = {}
    names = sorted(name for name in (os.listdir(folder) if os.path.isdir(folder) else [])
                   if name.startswith("events.out.tfevents."))
    for path in (os.path.join(folder, name) for name in names):  # not glob: brackets in a path are just brackets
        events = tf.data.TFRecordDataset(path).as_numpy_iterator()
        while True:
            try:
                event = tf.compat.v1.Event.FromString(next(events))
            except StopIteration:
                break
            except (tf.errors.OpError, ValueError) as error:
                phase(f"warning: TensorBoard events file {path} is damaged ({first_line(error)}); "
                      "using the events before it")
                break
            for value in event.summary.value:
                number = scalar_of(value)
                if number is not None:
                    series.setdefault(value.tag, []).append((event.step, number))
    return {tag: tuple(np.array(column) for column in zip(*sorted(points))) for tag, points in series.items()}


def scalar_of(value):
    if value.HasField("simple_value"):
        return float(value.simple_value)
    tensor = value.tensor
    if value.HasField("tensor") and not tensor.tensor_shape.dim and tensor.dtype != tf.string.as_datatype_enum:
        return float(tf.make_ndarray(tensor))
    return None


def training_curves(run_dir, config, metrics):
    """The curves of `training_curves.png`: per-step and per-epoch, against the optimizer step.

    Keras logs per-step loss and accuracy as running means over the epoch so far.
    """
    steps_per_epoch = metrics.get("steps_per_epoch") or math.ceil(metrics["examples"]["train"] / config["batch_size"])
    logs = run_dir.log_dir
    train, validation = read_scalars(os.path.join(logs, "train")), read_scalars(os.path.join(logs, "validation"))
    if not train:
        raise KerasbertError(f"run {run_dir} has no training scalars in {os.path.join(logs, 'train')}")
    series = {}
    for label, tag in (("train running loss", "batch_loss"), ("train running accuracy", "batch_accuracy"),
                       ("learning rate", "batch_learning_rate")):
        if tag in train:
            series[label] = train[tag]
    for label, source in (("train", train), ("validation", validation)):
        for name in ("loss", "accuracy"):
            if f"epoch_{name}" in source:
                epochs, values = source[f"epoch_{name}"]
                series[f"{label} epoch {name}"] = ((epochs + 1) * steps_per_epoch, values)
    return series


def write_report(run_dir):
    """Draw training_curves.png, write report.md; returns the report's text."""
    run_dir = rundir.resolved(run_dir)
    config, metrics = run_dir.finished_run("report on")
    plots.save_training_curves(training_curves(run_dir, config, metrics), run_dir.file(TRAINING_CURVES_PNG))
    text = report_markdown(run_dir, config, metrics)
    files.write_text_atomically(run_dir.report_file, text)
    return text


def machine_lines(metrics):
    """Where the run ran, its compute precision and its time estimate (older runs have none)."""
    lines = []
    if "hardware" in metrics:
        lines.append(f"Machine: {Hardware.from_dict(metrics['hardware']).describe()}.")
    if "precision" in metrics:
        precision = metrics["precision"]
        lines.append(f"Compute precision {precision['resolved']} (`--mixed-precision {precision['requested']}`: "
                     f"{precision['reason']}).")
    if metrics.get("estimate"):
        lines.append(f"Estimated after the first steps: {metrics['estimate']['total_seconds']:.0f} s in all.")
    return [" ".join(lines), ""] if lines else []


def report_markdown(run_dir, config, metrics):
    test, timing = metrics["test"], metrics["timing"]
    lines = [f"# Run `{os.path.basename(os.path.realpath(run_dir))}`", ""]
    lines += [f"Fine-tuned `{config['preset']}` on {metrics['examples']['train']:,} training examples "
              f"({metrics['epochs_run']} epoch(s)), validated on {metrics['examples']['validation']:,}, "
              f"tested on {metrics['examples']['test']:,}.", ""]
    lines += ["## Metrics", "", "| metric | test | validation |", "|---|---|---|"]
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc", "loss"):
        validation = metrics["validation"].get(name)
        lines.append(f"| {name} | {test[name]:.4f} | {'' if validation is None else f'{validation:.4f}'} |")
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, values in test["per_class"].items():
        lines.append(f"| {name} | {values['precision']:.4f} | {values['recall']:.4f} | {values['f1']:.4f} | "
                     f"{values['support']} |")
    if test.get("by_length"):  # runs before 2026-12-02 did not record it
        lines += ["", "Test accuracy by review length:", "", "| words | reviews | accuracy |", "|---|---|---|"]
        lines += [f"| {row['words']} | {row['examples']:,} | {row['accuracy']:.4f} |" for row in test["by_length"]]
    lines += ["", "## Timings", "", "| phase | seconds | sequences/s |", "|---|---|---|",
              f"| fine-tuning | {timing['train_seconds']:.1f} | {timing['train_sequences_per_second']:.2f} |",
              f"| test evaluation | {timing['eval_seconds']:.1f} | {timing['eval_sequences_per_second']:.2f} |",
              f"| total | {timing['total_seconds']:.1f} | |", "",
              f"Peak memory {metrics['peak_rss_mib']:.0f} MiB; {metrics.get('replicas', 1)} replica(s).", ""]
    lines += machine_lines(metrics)
    lines += ["## Pictures", ""]
    pictures = (("Training curves", TRAINING_CURVES_PNG), ("Test confusion matrix", rundir.CONFUSION_MATRIX_PNG),
                ("Test precision-recall", rundir.PRECISION_RECALL_PNG))
    for title, name in pictures:
        if os.path.isfile(os.path.join(run_dir, name)):
            lines += [f"![{title}]({name})", ""]
    lines += ["## Config", "", "| option | value |", "|---|---|"]
    lines += [f"| `--{name.replace('_', '-')}` | `{value}` |" for name, value in config.items()]
    return "\n".join(lines) + "\n"
