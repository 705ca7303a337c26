"""Pictures of a run, written as PNG files (matplotlib, no display needed)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402


def save_confusion_matrix(confusion, class_names, path):
    """Counts per (true, predicted) class, with row-normalised shading."""
    confusion = np.asarray(confusion)
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = 2.2 + 0.6 * len(class_names)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(confusion):
        axes.text(column, row, f"{count}\n{shares[row, column]:.1%}", ha="center", va="center",
                  color="white" if shares[row, column] > 0.5 else "black")
    axes.set_xticks(range(len(class_names)), class_names)
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Test confusion matrix")
    save_figure(figure, path)


def save_precision_recall(labels, probabilities, class_names, path):
    """One precision-recall curve per class (one-vs-rest), with its average precision."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    figure, axes = plt.subplots(figsize=(4.8, 4.2))
    for index, name in enumerate(class_names):
        precision, recall = precision_recall_curve(labels == index, probabilities[:, index])
        average = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
        axes.plot(recall, precision, label=f"{name} (AP {average:.3f})")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title("Test precision-recall")
    axes.legend(loc="lower left")
    axes.grid(alpha=0.3)
    save_figure(figure, path)


def precision_recall_curve(is_positive, scores):
    """Precision and recall at every distinct score threshold, by increasing recall."""
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    hits = np.asarray(is_positive, dtype=np.float64)[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(np.asarray(scores)[order])), len(order) - 1]
    true_positives = np.cumsum(hits)[last_of_each_score]
    predicted = last_of_each_score + 1
    return true_positives / predicted, true_positives / max(hits.sum(), 1)


def save_training_curves(series, path):
    """Loss, accuracy and learning rate against the training step.

    `series` maps a curve name (`train loss`, `validation accuracy`, `learning
    rate`, ...) to (steps, values); curves are grouped by their last word.
    """
    panels = ["loss", "accuracy", "rate"]
    figure, axes = plt.subplots(1, len(panels), figsize=(12, 3.4))
    for axis, panel in zip(axes, panels):
        for name, (steps, values) in series.items():
            if name.endswith(panel) and len(steps):
                axis.plot(steps, values, marker="o" if len(steps) < 10 else None, label=name)
        axis.set_xlabel("step")
        axis.set_title("learning rate" if panel == "rate" else panel)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    save_figure(figure, path)


def save_figure(figure, path):
    temporary = path + ".partial.png"
    figure.tight_layout()
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    os.replace(temporary, path)
