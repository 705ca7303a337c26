import numpy as np
import pytest

from kerasbert.evaluation import accuracy_by_length, classification_metrics, roc_auc


def test_binary_metrics_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    p_pos = np.array([0.1, 0.6, 0.3, 0.8, 0.4, 0.9, 0.7])
    metrics = classification_metrics(labels, np.stack([1 - p_pos, p_pos], axis=1), ["neg", "pos"])
    # predicted: 0 1 0 1 0 1 1 -> TP=3 FP=1 FN=1 TN=2
    assert metrics["confusion_matrix"] == [[2, 1], [1, 3]]
    assert metrics["accuracy"] == pytest.approx(5 / 7)
    assert metrics["precision"] == pytest.approx(3 / 4)
    assert metrics["recall"] == pytest.approx(3 / 4)
    assert metrics["f1"] == pytest.approx(3 / 4)
    # positives' scores beat negatives' in 11 of 12 pairs (0.4 < 0.6)
    assert metrics["roc_auc"] == pytest.approx(11 / 12)
    expected_loss = -np.mean(np.log(np.where(labels == 1, p_pos, 1 - p_pos)))
    assert metrics["loss"] == pytest.approx(expected_loss)
    assert metrics["per_class"]["neg"]["support"] == 3


def test_roc_auc_counts_ties_half():
    assert roc_auc(np.array([True, False]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert roc_auc(np.array([True, True, False]), np.array([0.9, 0.5, 0.5])) == pytest.approx(0.75)


def test_multiclass_metrics_are_macro_averages():
    labels = np.array([0, 1, 2, 2])
    probabilities = np.eye(3)[[0, 1, 1, 2]]
    metrics = classification_metrics(labels, probabilities, ["a", "b", "c"])
    assert metrics["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert metrics["recall"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert metrics["precision"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_accuracy_by_length_bins_texts_by_their_words():
    texts = ["one two", "a b c d e", "x " * 150, "y " * 450, "z " * 450]
    probabilities = np.eye(2)[[1, 1, 0, 1, 0]]
    bins = accuracy_by_length(texts, [1, 0, 0, 1, 1], probabilities)
    assert bins == [{"words": "0-99", "examples": 2, "accuracy": 0.5},
                    {"words": "100-199", "examples": 1, "accuracy": 1.0},
                    {"words": "400+", "examples": 2, "accuracy": 0.5}]  # 200-399 is empty: left out
