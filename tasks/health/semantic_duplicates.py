"""Near-duplicates by meaning: pairs of images whose features' cosine similarity reaches a threshold, found block by
block (memory stays bounded whatever the number of images); pure computation, reads and writes nothing.

The perceptual hash of ingest finds resized and re-encoded copies; features also find crops, flips, recolourings
and the same scene shot twice. A pair in two different splits is a leak: the model is scored on what it learnt from.
"""

from __future__ import annotations

import numpy as np

BLOCK_VALUES = 1 << 24  # similarities computed at once (64 MiB of float32): rows per block = this / images


def pairs(unit_features: np.ndarray, threshold: float, new_rows: np.ndarray | None = None) -> np.ndarray:
    """[pairs, 2] row indices (i < j) of every pair with cosine similarity >= threshold, and [pairs] similarities,
    as one array of (i, j, similarity) rows sorted by i, j. `unit_features` rows have unit length.

    With `new_rows`, only pairs that involve at least one of those rows are found (a run after new images compares
    the new ones with everything, not every old image with every other again).
    """
    count = len(unit_features)
    queries = np.arange(count) if new_rows is None else np.unique(new_rows)
    is_new = np.zeros(count, dtype=bool)
    is_new[queries] = True
    step = max(1, BLOCK_VALUES // max(count, 1))
    found = []
    for start in range(0, len(queries), step):
        rows = queries[start:start + step]
        similarity = unit_features[rows] @ unit_features.T
        block_row, column = np.nonzero(similarity >= threshold)
        row = rows[block_row]
        # each pair once: (i, j) with i < j, or, among new rows only, from the new row when the other is old
        keep = (row != column) & (~is_new[column] | (row < column))
        found.append(np.column_stack([row[keep], column[keep], similarity[block_row[keep], column[keep]]]))
    if not found:
        return np.zeros((0, 3))
    result = np.concatenate(found)
    low = np.minimum(result[:, 0], result[:, 1])
    high = np.maximum(result[:, 0], result[:, 1])
    result = np.column_stack([low, high, result[:, 2]])
    return result[np.lexsort((result[:, 1], result[:, 0]))]
