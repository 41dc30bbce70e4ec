"""Outliers: images far from every class, by the cosine distance of their features to each class's centroid measured
in that class's own spread (a robust z-score: median and median absolute deviation); pure computation.

An image counts as an outlier when even the class it is closest to, in those units, holds it more than `spread`
spreads out: a photo of something no class is about, a blank or broken picture, a screenshot among photos.
"""

from __future__ import annotations

import numpy as np

MAD_TO_SIGMA = 1.4826  # the median absolute deviation of a normal distribution times this is its sigma


def spreads(unit_features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[images, classes] distance of each image to each class centroid, as robust z-scores of that class's own
    members' distances (inf for a class with no images)."""
    result = np.full((len(labels), num_classes), np.inf)
    for label in range(num_classes):
        members = unit_features[labels == label]
        if len(members) == 0:
            continue
        centroid = members.mean(axis=0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        distances = 1.0 - unit_features @ centroid
        own = distances[labels == label]
        middle = float(np.median(own))
        scale = max(MAD_TO_SIGMA * float(np.median(np.abs(own - middle))), 1e-6)
        result[:, label] = (distances - middle) / scale
    return result


def find(unit_features: np.ndarray, labels: np.ndarray, num_classes: int, spread: float) -> tuple[np.ndarray,
                                                                                                   np.ndarray,
                                                                                                   np.ndarray]:
    """(indices of the outliers, most distant first; their spread from the nearest class; that class's index)."""
    if len(labels) == 0:
        return np.zeros(0, dtype=int), np.zeros(0), np.zeros(0, dtype=int)
    scores = spreads(unit_features, labels, num_classes)
    nearest = scores.argmin(axis=1)
    least = scores[np.arange(len(labels)), nearest]
    found = np.flatnonzero(least > spread)
    order = found[np.argsort(-least[found], kind="stable")]
    return order, least[order], nearest[order]
