"""Class balance of a training split: per-class counts, `balanced` class weights and the weight of each image;
pure computation on the split table's label cells, reads and writes nothing.

`train.class_weight: balanced` weighs each class by n_images / (n_classes * images_of_class), as scikit-learn's
`class_weight="balanced"` does, so that every class carries the same total weight in the loss. The weights reach
the loss as per-image sample weights that the dataset yields beside the labels (not through Keras's `class_weight`
argument, which some tf.data inputs silently ignore: tensorflow#33550). A multi-label image weighs the mean of
its labels' weights. Image weights are scaled to a mean of 1 over the split, so the loss keeps its scale and the
learning rate its meaning.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from tasks import label_sets


def class_counts(cells: Iterable[str], labels: Sequence[str]) -> np.ndarray:
    """Images per label (a multi-label image counts for each of its labels)."""
    return label_sets.multi_hot(cells, labels).sum(axis=0).astype(np.int64)


def balanced_class_weights(counts: np.ndarray) -> np.ndarray:
    """n_images / (n_present_classes * count) per class; 0 for a class without images (it contributes nothing)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        return np.zeros_like(counts)
    return np.divide(counts.sum(), present.sum() * counts, out=np.zeros_like(counts), where=present)


def image_weights(cells: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Each image's loss weight under `balanced` class weights, scaled to a mean of 1 (float32)."""
    hot = label_sets.multi_hot(cells, labels)
    per_class = balanced_class_weights(hot.sum(axis=0))
    counts = hot.sum(axis=1)
    weights = np.divide(hot @ per_class, counts, out=np.ones(len(hot)), where=counts > 0)
    mean = weights.mean() if len(weights) else 1.0
    return (weights / mean if mean > 0 else np.ones(len(hot))).astype(np.float32)


def imbalance_ratio(counts: np.ndarray) -> float | None:
    """Largest class count over the smallest non-empty one; None without classes."""
    present = np.asarray(counts)[np.asarray(counts) > 0]
    return float(present.max() / present.min()) if len(present) else None
