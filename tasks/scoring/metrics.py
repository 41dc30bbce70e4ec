"""Classification metrics with bootstrap intervals and calibration error; pure computation, reads and writes nothing."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as sk_metrics

BOOTSTRAP_SAMPLES = 1000
CONFIDENCE_LEVEL = 0.95
CALIBRATION_BINS = 15


def macro_f1_from_counts(confusion: np.ndarray) -> np.ndarray:
    """Macro-F1 of one or many confusion matrices (..., classes, classes), rows = actual; absent classes count as 0."""
    true_positives = np.diagonal(confusion, axis1=-2, axis2=-1).astype(float)
    predicted = confusion.sum(axis=-2).astype(float)
    actual = confusion.sum(axis=-1).astype(float)
    denominator = predicted + actual
    f1 = np.divide(2 * true_positives, denominator, out=np.zeros_like(true_positives), where=denominator > 0)
    return f1.mean(axis=-1)


def _class_counts(true_index: np.ndarray, predicted_index: np.ndarray,
                  num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, predicted and actual images per class: what macro-F1 needs of a confusion matrix, in memory
    that grows with the classes, not with their square (10,000 classes made a dense matrix per resample 800 MB)."""
    right = true_index == predicted_index
    return (np.bincount(true_index[right], minlength=num_classes), np.bincount(predicted_index, minlength=num_classes),
            np.bincount(true_index, minlength=num_classes))


def _score(true_index: np.ndarray, predicted_index: np.ndarray, num_classes: int, metric: str) -> float:
    if metric == "accuracy":
        return float(np.mean(true_index == predicted_index)) if len(true_index) else 0.0
    if metric == "macro_f1":
        true_positives, predicted, actual = (counts.astype(float) for counts in
                                             _class_counts(true_index, predicted_index, num_classes))
        denominator = predicted + actual
        f1 = np.divide(2 * true_positives, denominator, out=np.zeros_like(true_positives), where=denominator > 0)
        return float(f1.mean())
    raise ValueError(f"evaluate.gate.metric must be accuracy or macro_f1, got {metric!r}")


def bootstrap(true_index: np.ndarray, predicted: list[np.ndarray], num_classes: int, metric: str, seed: int,
              count: int = BOOTSTRAP_SAMPLES) -> np.ndarray:
    """`metric` of each predictor on `count` resamples (with replacement) of the same images: shape (count, predictors).

    One resample at a time, counts per class only, so memory grows with neither the test set's square nor the
    square of the number of classes.
    """
    generator = np.random.default_rng(seed)
    scores = np.empty((count, len(predicted)))
    for sample in range(count):
        indices = generator.integers(0, len(true_index), len(true_index))
        for column, predicted_index in enumerate(predicted):
            scores[sample, column] = _score(true_index[indices], predicted_index[indices], num_classes, metric)
    return scores


def interval(values: np.ndarray) -> list[float]:
    tail = (1 - CONFIDENCE_LEVEL) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def expected_calibration_error(true_index: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Mean gap between confidence and accuracy over equal-width confidence bins, weighted by bin size."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == true_index
    edges = np.linspace(0, 1, bins + 1)
    bin_index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for index in range(bins):
        members = bin_index == index
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def compute_metrics(true_index: np.ndarray, probabilities: np.ndarray, labels: list[str], top_k: int,
                    seed: int) -> dict[str, Any]:
    """Accuracy, top-k accuracy, macro and weighted F1 (with bootstrap intervals for accuracy and macro-F1),
    expected calibration error, and per-class precision, recall, F1 and support."""
    predicted_index = probabilities.argmax(axis=1)
    label_ids = list(range(len(labels)))
    precision, recall, f1, support = sk_metrics.precision_recall_fscore_support(
        true_index, predicted_index, labels=label_ids, zero_division=0
    )
    result: dict[str, Any] = {
        "accuracy": float(sk_metrics.accuracy_score(true_index, predicted_index)),
        "accuracy_ci": interval(bootstrap(true_index, [predicted_index], len(labels), "accuracy", seed)[:, 0]),
    }
    if top_k < len(labels):  # with as many guesses as classes it would be 1.0 and say nothing
        result[f"top_{top_k}_accuracy"] = float(
            sk_metrics.top_k_accuracy_score(true_index, probabilities, k=top_k, labels=label_ids))
    return result | {
        "macro_f1": float(sk_metrics.f1_score(true_index, predicted_index, labels=label_ids, average="macro",
                                              zero_division=0)),
        "macro_f1_ci": interval(bootstrap(true_index, [predicted_index], len(labels), "macro_f1", seed)[:, 0]),
        "weighted_f1": float(sk_metrics.f1_score(true_index, predicted_index, labels=label_ids, average="weighted",
                                                 zero_division=0)),
        "ece": expected_calibration_error(true_index, probabilities),
        "test_images": int(len(true_index)),
        "bootstrap_samples": BOOTSTRAP_SAMPLES,
        "per_class": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                    "support": int(support[i])}
            for i, label in enumerate(labels)
        },
    }


def paired_difference(true_index: np.ndarray, candidate_index: np.ndarray, champion_index: np.ndarray,
                      num_classes: int, metric: str, seed: int) -> tuple[float, list[float]]:
    """Candidate minus champion on the same images for `accuracy` or `macro_f1`, with a paired bootstrap interval."""
    point = (_score(true_index, candidate_index, num_classes, metric)
             - _score(true_index, champion_index, num_classes, metric))
    scores = bootstrap(true_index, [candidate_index, champion_index], num_classes, metric, seed)
    return float(point), interval(scores[:, 0] - scores[:, 1])
