"""Test metrics from predicted probabilities: accuracy, precision, recall, F1,
ROC-AUC, confusion matrix and cross-entropy loss.

For two classes, precision, recall and F1 are those of class 1 (the positive
class, `pos` for IMDB); for more, they are macro averages. Per-class values are
always reported too.

Example:

>>> import numpy as np
>>> metrics = classification_metrics(np.array([0, 1, 1]),
...                                  np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), ["neg", "pos"])
>>> round(metrics["accuracy"], 3), metrics["confusion_matrix"]
(0.667, [[1, 0], [1, 1]])
>>> accuracy_by_length(["Great.", "Not good at all, sadly.", "Fine."], [1, 0, 1],
...                    np.array([[0.1, 0.9], [0.8, 0.2], [0.7, 0.3]]), edges=(3,))
[{'words': '0-2', 'examples': 2, 'accuracy': 0.5}, {'words': '3+', 'examples': 1, 'accuracy': 1.0}]
"""

import time

import numpy as np

from kerasbert.progress import keras_verbosity


def classification_metrics(labels, probabilities, class_names):
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predictions = probabilities.argmax(axis=1)
    count = len(class_names)
    confusion = np.zeros((count, count), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    true_positives = np.diag(confusion).astype(np.float64)
    precision = safe_divide(true_positives, confusion.sum(axis=0))
    recall = safe_divide(true_positives, confusion.sum(axis=1))
    f1 = safe_divide(2 * precision * recall, precision + recall)
    auc = [roc_auc(labels == k, probabilities[:, k]) for k in range(count)]
    headline = 1 if count == 2 else slice(None)
    picked = probabilities[np.arange(len(labels)), labels]
    return {
        "examples": int(len(labels)),
        "accuracy": float(true_positives.sum() / max(len(labels), 1)),
        "precision": float(np.mean(precision[headline])),
        "recall": float(np.mean(recall[headline])),
        "f1": float(np.mean(f1[headline])),
        "roc_auc": float(auc[1] if count == 2 else np.nanmean(auc)),
        "loss": float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0)))),
        "confusion_matrix": confusion.tolist(),
        "per_class": {
            name: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                   "support": int(confusion[k].sum())}
            for k, name in enumerate(class_names)
        },
    }


# Words per text. Reviews on most other sites are shorter than IMDB's (median about 170 words),
# so the first bin shows how a model tuned on IMDB does on their kind of text.
LENGTH_BINS = (100, 200, 400)


def words_in(text):
    """A text's length in words, as `accuracy_by_length` bins it."""
    return len(text.split())


def accuracy_by_length(texts, labels, probabilities, edges=LENGTH_BINS):
    """Accuracy within bins of text length in words (empty bins left out)."""
    return accuracy_by_words(np.array([words_in(text) for text in texts]), labels, probabilities, edges)


def accuracy_by_words(words, labels, probabilities, edges=LENGTH_BINS):
    """`accuracy_by_length` from each text's length in words."""
    words = np.asarray(words)
    correct = np.asarray(probabilities).argmax(axis=1) == np.asarray(labels)
    bins = []
    for low, high in zip((0, *edges), (*edges, None)):
        inside = (words >= low) & (words < high if high else True)
        if inside.any():
            bins.append({"words": f"{low}-{high - 1}" if high else f"{low}+", "examples": int(inside.sum()),
                         "accuracy": float(correct[inside].mean())})
    return bins


def safe_divide(numerator, denominator):
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=np.float64),
                     where=np.asarray(denominator) > 0)


def roc_auc(is_positive, scores):
    """Area under the ROC curve (Mann-Whitney statistic, ties counted half)."""
    is_positive = np.asarray(is_positive, dtype=bool)
    positives, negatives = is_positive.sum(), (~is_positive).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average rank within each run of tied scores.
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[is_positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def predict_probabilities(classifier, dataset):
    """A classifier's probabilities for a dataset of (features, label) batches, and the seconds it took."""
    start = time.perf_counter()
    probabilities = classifier.predict_probabilities(dataset, verbose=keras_verbosity())
    return probabilities, time.perf_counter() - start


def format_metrics_table(metrics):
    rows = [("accuracy", metrics["accuracy"]), ("precision", metrics["precision"]),
            ("recall", metrics["recall"]), ("F1", metrics["f1"]), ("ROC-AUC", metrics["roc_auc"]),
            ("loss", metrics["loss"])]
    lines = [f"  {name:<10} {value:8.4f}" for name, value in rows]
    return "\n".join(lines)


def labeled_rows(texts, probabilities, class_names):
    """`classify`'s rows: each text with its label, that label's probability and every class's."""
    return [{"text": text, "label": class_names[int(row.argmax())], "probability": float(row.max()),
             "probabilities": {name: float(p) for name, p in zip(class_names, row)}}
            for text, row in zip(texts, probabilities)]
