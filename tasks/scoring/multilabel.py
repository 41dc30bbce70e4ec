"""Multi-label metrics and per-label thresholds: micro and macro F1, subset accuracy, mean average precision,
per-label precision/recall/F1, bootstrap intervals; pure computation on 0/1 matrices, reads and writes nothing.

Conventions match the single-label metrics (tasks/scoring/metrics.py): a label with no positive image and no
positive prediction has F1 0 in the macro mean, and intervals are 95% bootstrap intervals over images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as sk_metrics

from tasks.scoring.metrics import BOOTSTRAP_SAMPLES, interval

DEFAULT_THRESHOLD = 0.5  # for a label without positive validation images, where no threshold can be chosen
METRICS = ("accuracy", "macro_f1", "micro_f1")


def choose_thresholds(truth: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Per label, the probability threshold (predict the label when p >= it) with the best F1 on these images.

    The threshold lies halfway between the lowest probability it accepts and the next lower one, so that it does not
    sit on a validation image's exact score; DEFAULT_THRESHOLD for a label with no positive image here.
    """
    truth = np.asarray(truth, dtype=bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    thresholds = np.full(truth.shape[1], DEFAULT_THRESHOLD)
    for label in range(truth.shape[1]):
        positives = int(truth[:, label].sum())
        if positives == 0:
            continue
        order = np.argsort(-probabilities[:, label], kind="stable")
        scores, hits = probabilities[order, label], truth[order, label]
        true_positives = np.cumsum(hits)
        predicted = np.arange(1, len(scores) + 1)
        f1 = 2 * true_positives / (predicted + positives)
        # only cut where the next score is lower: equal scores are accepted or refused together
        cuttable = np.append(scores[1:] < scores[:-1], True)
        best = int(np.argmax(np.where(cuttable, f1, -1.0)))
        lower = scores[best + 1] if best + 1 < len(scores) else 0.0
        thresholds[label] = float((scores[best] + lower) / 2)
    return thresholds


def _counts(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives and false negatives per label (last axis), summed over images."""
    truth, predicted = truth.astype(bool), predicted.astype(bool)
    return ((truth & predicted).sum(axis=-2), (~truth & predicted).sum(axis=-2), (truth & ~predicted).sum(axis=-2))


def _f1(true_positives: np.ndarray, false_positives: np.ndarray, false_negatives: np.ndarray) -> np.ndarray:
    denominator = (2 * true_positives + false_positives + false_negatives).astype(float)
    return np.divide(2 * true_positives, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def score(truth: np.ndarray, predicted: np.ndarray, metric: str) -> float:
    """`accuracy` (the share of images whose whole label set is right), `macro_f1` or `micro_f1`."""
    truth, predicted = np.asarray(truth, dtype=bool), np.asarray(predicted, dtype=bool)
    if metric == "accuracy":
        return float((truth == predicted).all(axis=1).mean()) if len(truth) else 0.0
    true_positives, false_positives, false_negatives = _counts(truth, predicted)
    if metric == "macro_f1":
        return float(_f1(true_positives, false_positives, false_negatives).mean())
    if metric == "micro_f1":
        return float(_f1(true_positives.sum(), false_positives.sum(), false_negatives.sum()))
    raise ValueError(f"a multi-label metric must be one of {', '.join(METRICS)}, got {metric!r}")


def bootstrap(truth: np.ndarray, predicted: list[np.ndarray], metric: str, seed: int,
              count: int = BOOTSTRAP_SAMPLES) -> np.ndarray:
    """`metric` of each predictor on `count` resamples of the same images: shape (count, predictors)."""
    generator = np.random.default_rng(seed)
    truth = np.asarray(truth, dtype=bool)
    scores = np.empty((count, len(predicted)))
    for sample in range(count):
        indices = generator.integers(0, len(truth), len(truth))
        for column, prediction in enumerate(predicted):
            scores[sample, column] = score(truth[indices], np.asarray(prediction, dtype=bool)[indices], metric)
    return scores


def mean_average_precision(truth: np.ndarray, probabilities: np.ndarray) -> float | None:
    """The mean over labels with at least one positive image of sklearn's average precision; None when none has."""
    truth = np.asarray(truth, dtype=bool)
    present = [label for label in range(truth.shape[1]) if truth[:, label].any()]
    if not present:
        return None
    return float(np.mean([sk_metrics.average_precision_score(truth[:, label], probabilities[:, label])
                          for label in present]))


def compute_metrics(truth: np.ndarray, probabilities: np.ndarray, thresholds: Sequence[float], labels: list[str],
                    seed: int) -> dict[str, Any]:
    """Subset accuracy, micro/macro/weighted F1 (bootstrap intervals for accuracy and macro-F1), mean average
    precision, Hamming loss, and per label: precision, recall, F1, support, average precision and threshold."""
    truth = np.asarray(truth, dtype=bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = probabilities >= np.asarray(thresholds, dtype=np.float64)[None, :]
    precision, recall, f1, support = sk_metrics.precision_recall_fscore_support(
        truth, predicted, average=None, zero_division=0)
    average_precision = [float(sk_metrics.average_precision_score(truth[:, label], probabilities[:, label]))
                         if truth[:, label].any() else None for label in range(len(labels))]
    return {
        "task": "multi_label",
        "accuracy": score(truth, predicted, "accuracy"),
        "accuracy_ci": interval(bootstrap(truth, [predicted], "accuracy", seed)[:, 0]),
        "macro_f1": score(truth, predicted, "macro_f1"),
        "macro_f1_ci": interval(bootstrap(truth, [predicted], "macro_f1", seed)[:, 0]),
        "micro_f1": score(truth, predicted, "micro_f1"),
        "weighted_f1": float(sk_metrics.f1_score(truth, predicted, average="weighted", zero_division=0)),
        "mean_average_precision": mean_average_precision(truth, probabilities),
        "hamming_loss": float(sk_metrics.hamming_loss(truth, predicted)),
        "test_images": int(len(truth)),
        "bootstrap_samples": BOOTSTRAP_SAMPLES,
        "per_class": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                    "support": int(support[i]), "average_precision": average_precision[i],
                    "threshold": float(thresholds[i])}
            for i, label in enumerate(labels)
        },
    }


def outcome_counts(truth: np.ndarray, predicted: np.ndarray, labels: list[str]) -> list[dict[str, Any]]:
    """Per label: true positives, false positives, false negatives and true negatives (the per-label table that
    replaces a confusion matrix)."""
    truth, predicted = np.asarray(truth, dtype=bool), np.asarray(predicted, dtype=bool)
    true_positives, false_positives, false_negatives = _counts(truth, predicted)
    true_negatives = (~truth & ~predicted).sum(axis=0)
    return [{"label": label, "true_positives": int(true_positives[i]), "false_positives": int(false_positives[i]),
             "false_negatives": int(false_negatives[i]), "true_negatives": int(true_negatives[i])}
            for i, label in enumerate(labels)]


def paired_difference(truth: np.ndarray, candidate: np.ndarray, champion: np.ndarray, metric: str,
                      seed: int) -> tuple[float, list[float]]:
    """Candidate minus champion `metric` on the same images, with a paired bootstrap interval."""
    point = score(truth, candidate, metric) - score(truth, champion, metric)
    scores = bootstrap(truth, [candidate, champion], metric, seed)
    return float(point), interval(scores[:, 0] - scores[:, 1])
