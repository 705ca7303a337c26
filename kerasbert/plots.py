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


def save_figure(figure, path):
    temporary = path + ".partial.png"
    figure.tight_layout()
    figure.savefig(temporary, dpi=100)
    plt.close(figure)
    os.replace(temporary, path)
