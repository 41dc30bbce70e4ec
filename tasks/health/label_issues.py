"""Likely label errors: out-of-fold probabilities from a k-fold fit of a linear head on the features, ranked by
cleanlab; pure computation, reads and writes nothing.

Each image's probabilities come from a head that never saw it (stratified, seeded folds), so an image whose given
label disagrees with what the rest of the data says stands out. cleanlab (confident learning) decides which images
are issues (`find_label_issues`, pruned by the estimated noise rate), scores every image's label quality
(`get_label_quality_scores`: the out-of-fold probability of the given label; lower is more likely wrong) and
estimates the joint distribution of given and true labels, whose off-diagonal mass is the estimated noise rate.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MAX_ITERATIONS = 300  # of the head's solver; it converges in far fewer on normalised features
REGULARISATION = 1.0  # scikit-learn's C on standardised features


@dataclass
class Found:
    """What the label check found: one entry per image analysed (those of classes large enough for the folds)."""

    analysed: np.ndarray  # indices into the images given
    probabilities: np.ndarray  # out-of-fold, [analysed, classes]
    issues: np.ndarray  # bool per analysed image: cleanlab counts it as a label issue
    scores: np.ndarray  # label quality per analysed image, 0..1, lower is more likely wrong
    suggested: np.ndarray  # class index per analysed image: the most probable out of fold
    noise_rate: float  # estimated share of analysed images whose given label is wrong
    folds: int
    notes: list[str] = field(default_factory=list)
    fit_seconds: float = 0.0


def _head(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=REGULARISATION, max_iter=MAX_ITERATIONS,
                                                              random_state=seed))


def _sample(rows: np.ndarray, labels: np.ndarray, most: int, generator: np.random.Generator) -> np.ndarray:
    """At most `most` of `rows`, drawn per class in proportion (every class keeps at least one), sorted."""
    if len(rows) <= most:
        return rows
    kept = []
    for label in np.unique(labels[rows]):
        members = rows[labels[rows] == label]
        count = max(1, round(most * len(members) / len(rows)))
        kept.append(generator.choice(members, size=min(count, len(members)), replace=False))
    return np.sort(np.concatenate(kept))


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, num_classes: int, folds: int, seed: int,
                              max_fit_images: int) -> np.ndarray:
    """[images, num_classes] probabilities, each image's from the head of the fold that left it out."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold

    probabilities = np.zeros((len(labels), num_classes), dtype=np.float64)
    generator = np.random.default_rng(seed)
    for train_rows, held_out in StratifiedKFold(folds, shuffle=True, random_state=seed).split(features, labels):
        train_rows = _sample(train_rows, labels, max_fit_images, generator)
        head = _head(seed)
        with warnings.catch_warnings():  # a head short of full convergence still ranks labels well
            warnings.simplefilter("ignore", ConvergenceWarning)
            head.fit(features[train_rows], labels[train_rows])
        classes = head.classes_
        probabilities[np.ix_(held_out, classes)] = head.predict_proba(features[held_out])
    return probabilities


def find(features: np.ndarray, labels: np.ndarray, num_classes: int, folds: int, seed: int,
         max_fit_images: int) -> Found | None:
    """Rank every image of a class with at least two images; None (with the reason logged) when no two classes
    qualify. Fewer folds are used when the smallest class has fewer images than `folds`."""
    from cleanlab import count, filter, rank

    counts = np.bincount(labels, minlength=num_classes)
    usable = counts >= 2
    notes = []
    if (~usable & (counts > 0)).any():
        notes.append(f"{int((~usable & (counts > 0)).sum())} class(es) with a single image left out of the label "
                     "check (no fold could hold it out)")
    analysed = np.flatnonzero(usable[labels])
    if usable.sum() < 2:
        logger.warning("health: label check skipped: fewer than two classes with at least two images")
        return None
    kept_classes = np.flatnonzero(usable)
    index_of = np.full(num_classes, -1)
    index_of[kept_classes] = np.arange(len(kept_classes))
    local = index_of[labels[analysed]]
    used_folds = int(min(folds, counts[usable].min()))
    if used_folds < folds:
        notes.append(f"{used_folds} folds instead of health.folds={folds}: the smallest class has "
                     f"{int(counts[usable].min())} images")
    started = time.process_time()
    probabilities = out_of_fold_probabilities(features[analysed], local, len(kept_classes), used_folds, seed,
                                              max_fit_images)
    fit_seconds = time.process_time() - started
    issues = filter.find_label_issues(local, probabilities, filter_by="prune_by_noise_rate")
    scores = rank.get_label_quality_scores(local, probabilities)
    joint = count.estimate_joint(local, probabilities)
    noise_rate = float(max(0.0, 1.0 - np.trace(joint)))
    full = np.zeros((len(analysed), num_classes))
    full[:, kept_classes] = probabilities
    return Found(analysed, full, np.asarray(issues, dtype=bool), np.asarray(scores, dtype=float),
                 kept_classes[probabilities.argmax(axis=1)], noise_rate, used_folds, notes, fit_seconds)


def confused_pairs(given: np.ndarray, predicted: np.ndarray, labels: list[str], most: int = 10) -> list[dict]:
    """The (given, predicted out of fold) class pairs with the most images, largest first."""
    pairs: dict[tuple[int, int], int] = {}
    for actual, guess in zip(given.tolist(), predicted.tolist()):
        if actual != guess:
            pairs[(actual, guess)] = pairs.get((actual, guess), 0) + 1
    ranked = sorted(pairs.items(), key=lambda item: (-item[1], labels[item[0][0]], labels[item[0][1]]))[:most]
    return [{"given": labels[actual], "predicted": labels[guess], "images": count} for (actual, guess), count
            in ranked]
