"""Fits the classification head on cached backbone features: L2-regularised logistic regression (multinomial, or one
per label for a multi-label task) on standardised features, its strength chosen on the validation split; reads and
writes nothing.

A logistic regression is exactly a softmax (or sigmoid) Dense layer, so the fitted head becomes the Dense layer of the
saved Keras model (the standardisation folded into its weights). Measured on the clothing photos' given split (EfficientNet-Lite2 features), it scored 0.80 test macro-F1 where a Dense head trained
with Adam and early stopping scored 0.75-0.77 (benchmarks/BENCHMARKS.md, "Pretrained features").
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from tasks.scoring import metrics as metric_functions
from tasks.scoring import multilabel, selection

logger = logging.getLogger(__name__)

# inverse regularisation strengths tried, weakest regularisation last; each fit starts from the previous solution
STRENGTHS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
MAX_ITERATIONS = 500
ABSENT_CLASS_BIAS = -30.0  # a class with no training image is never predicted


@dataclass
class Head:
    """A fitted head: probabilities = activation(features @ kernel + bias), on raw (unstandardised) features."""

    kernel: np.ndarray  # (features, classes)
    bias: np.ndarray  # (classes,)
    multi_label: bool
    history: pd.DataFrame  # one row per strength tried, in the columns of a training history
    kept: pd.Series  # the row of the strength kept

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        logits = features.astype(np.float64) @ self.kernel + self.bias
        if self.multi_label:
            return 1.0 / (1.0 + np.exp(-logits))
        logits -= logits.max(axis=1, keepdims=True)
        exponentials = np.exp(logits)
        return exponentials / exponentials.sum(axis=1, keepdims=True)


def _log_loss(truth: np.ndarray, probabilities: np.ndarray, multi_label: bool) -> float:
    clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
    if multi_label:
        return float(-(truth * np.log(clipped) + (1 - truth) * np.log(1 - clipped)).mean())
    return float(-np.log(clipped[np.arange(len(truth)), truth]).mean())


def _scores(truth: np.ndarray, probabilities: np.ndarray, classes: int, multi_label: bool) -> dict[str, float]:
    if multi_label:
        predicted = probabilities >= 0.5
        return {"loss": _log_loss(truth, probabilities, True),
                "accuracy": multilabel.score(truth, predicted, "accuracy"),
                "macro_f1": multilabel.score(truth, predicted, "macro_f1")}
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    return {"loss": _log_loss(truth, probabilities, False), "accuracy": float((predicted == truth).mean()),
            "macro_f1": float(metric_functions.macro_f1_from_counts(confusion))}


def _fold(model: LogisticRegression, mean: np.ndarray, scale: np.ndarray, present: np.ndarray,
          classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The fitted model as (kernel, bias) over all `classes` acting on raw features."""
    coefficients, intercepts = model.coef_, model.intercept_
    if coefficients.shape[0] == 1 and len(present) == 2:  # binary: sklearn fits one logit, of the second class
        coefficients = np.vstack([np.zeros_like(coefficients), coefficients])
        intercepts = np.array([0.0, intercepts[0]])
    kernel = np.zeros((len(mean), classes))
    bias = np.full(classes, ABSENT_CLASS_BIAS)
    kernel[:, present] = (coefficients / scale).T
    bias[present] = intercepts - coefficients @ (mean / scale)
    return kernel, bias


def _fit_one_label(features: np.ndarray, truth: np.ndarray, weights: np.ndarray | None, strength: float,
                   start: LogisticRegression | None) -> LogisticRegression | float:
    """A binary logistic regression for one label; a constant rate when the training split has only one answer."""
    if truth.min() == truth.max():
        return float(truth[0])
    model = start or LogisticRegression(max_iter=MAX_ITERATIONS, warm_start=True)
    model.set_params(C=strength)
    return model.fit(features, truth, sample_weight=weights)


def _fit_strength(standardised: np.ndarray, truth: np.ndarray, weights: np.ndarray | None, strength: float,
                  models: list, multi_label: bool) -> list:
    if multi_label:
        return [_fit_one_label(standardised, truth[:, label], weights, strength,
                               models[label] if models and isinstance(models[label], LogisticRegression) else None)
                for label in range(truth.shape[1])]
    model = models[0] if models else LogisticRegression(max_iter=MAX_ITERATIONS, warm_start=True)
    model.set_params(C=strength)
    return [model.fit(standardised, truth, sample_weight=weights)]


def _as_head(models: list, mean: np.ndarray, scale: np.ndarray, truth: np.ndarray, classes: int,
             multi_label: bool) -> tuple[np.ndarray, np.ndarray]:
    if not multi_label:
        return _fold(models[0], mean, scale, np.unique(truth), classes)
    kernel, bias = np.zeros((len(mean), classes)), np.zeros(classes)
    for label, model in enumerate(models):
        if isinstance(model, float):  # every training image says the same: a constant, safely inside (0, 1)
            rate = min(max(model, 1e-4), 1 - 1e-4)
            bias[label] = np.log(rate / (1 - rate))
        else:
            column_kernel, column_bias = _fold(model, mean, scale, np.array([0, 1]), 2)
            kernel[:, label], bias[label] = column_kernel[:, 1] - column_kernel[:, 0], column_bias[1] - column_bias[0]
    return kernel, bias


def fit(train_features: np.ndarray, train_truth: np.ndarray, val_features: np.ndarray, val_truth: np.ndarray,
        classes: int, multi_label: bool, select_on: str, weights: np.ndarray | None = None) -> Head:
    """Fit the head at every strength of STRENGTHS, keep the one best on validation (`select_on`, val_loss
    breaking ties, as for epochs). `truth` is class indices, or multi-hot rows for a multi-label task; `weights`
    are per-image loss weights (train.class_weight: balanced)."""
    if not multi_label and len(np.unique(train_truth)) < 2:
        raise ValueError("the train split holds images of one class only; a classifier needs at least two (add "
                         "images of other classes, or check validate.min_classes)")
    mean = train_features.mean(axis=0)
    scale = train_features.std(axis=0) + 1e-6
    standardised = (train_features - mean) / scale
    rows, heads, models = [], [], []
    with warnings.catch_warnings():
        # a strength that has not fully converged in MAX_ITERATIONS is still a valid candidate; validation judges it
        warnings.simplefilter("ignore", ConvergenceWarning)
        for index, strength in enumerate(STRENGTHS):
            models = _fit_strength(standardised, train_truth, weights, strength, models, multi_label)
            kernel, bias = _as_head(models, mean, scale, train_truth, classes, multi_label)
            candidate = Head(kernel, bias, multi_label, pd.DataFrame(), pd.Series(dtype=object))
            train_scores = _scores(train_truth, candidate.probabilities(train_features), classes, multi_label)
            val_scores = _scores(val_truth, candidate.probabilities(val_features), classes, multi_label)
            rows.append({"epoch": index, "phase": "head", "strength": strength, **train_scores,
                         **{f"val_{name}": value for name, value in val_scores.items()}})
            heads.append((kernel, bias))
    history = pd.DataFrame(rows)
    best = selection.best_row(history, select_on)
    kernel, bias = heads[best]
    return Head(kernel, bias, multi_label, history, history.iloc[best])
