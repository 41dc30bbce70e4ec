"""Label sets of multi-label images: a label cell "a;b" <-> its labels <-> a multi-hot row, and which task the data
asks for; pure computation, reads and writes nothing.

The manifest and the split table keep one text cell per image (`label`): one label, or several sorted, unique and
joined with SEPARATOR (ingest's label tables write them so). A model's vocabulary is the individual labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

SEPARATOR = ";"
SINGLE_LABEL = "single_label"
MULTI_LABEL = "multi_label"
TASKS = (SINGLE_LABEL, MULTI_LABEL)


def split(cell: str) -> list[str]:
    """The labels of one cell: "b;a" -> ["a", "b"]; "" -> []."""
    return sorted({part.strip() for part in str(cell).split(SEPARATOR) if part.strip()})


def join(labels: Iterable[str]) -> str:
    """The canonical cell of a set of labels: sorted, unique, joined with SEPARATOR."""
    return SEPARATOR.join(sorted(set(labels)))


def has_several(cells: Iterable[str]) -> bool:
    """Whether any image holds more than one label."""
    return any(SEPARATOR in str(cell) for cell in cells)


def vocabulary(cells: Iterable[str]) -> list[str]:
    """The individual labels of all cells, sorted."""
    return sorted({label for cell in set(map(str, cells)) for label in split(cell)})


def decide_task(setting: str, several: bool) -> str:
    """`train.task` (auto, single_label, multi_label) for data whose cells do (`several`) or do not hold several
    labels; a single-label task for multi-label data is an error, since each image must then have one class."""
    if setting == "auto":
        return MULTI_LABEL if several else SINGLE_LABEL
    if setting == SINGLE_LABEL and several:
        raise ValueError("train.task is single_label, but some images have several labels (a label cell such as "
                         "'a;b'); set train.task to auto or multi_label, or give each image one label")
    if setting not in TASKS:
        raise ValueError(f"train.task must be auto, single_label or multi_label, got {setting!r}")
    return setting


def multi_hot(cells: Iterable[str], labels: Sequence[str], strict: bool = True) -> np.ndarray:
    """A (images, labels) 0/1 matrix; a label outside `labels` is an error when `strict`, else left out (a model
    that does not know it cannot have predicted it)."""
    index = {label: position for position, label in enumerate(labels)}
    cells = list(cells)
    matrix = np.zeros((len(cells), len(labels)), dtype=np.float32)
    for row, cell in enumerate(cells):
        for label in split(cell):
            if label in index:
                matrix[row, index[label]] = 1.0
            elif strict:
                raise ValueError(f"label {label!r} is not one of the model's labels ({', '.join(labels)})")
    return matrix


def cells_from(indicators: np.ndarray, labels: Sequence[str]) -> list[str]:
    """The canonical cell of each row of a 0/1 (or boolean) matrix."""
    return [join(labels[column] for column in np.flatnonzero(row)) for row in np.asarray(indicators, dtype=bool)]


def decide(probabilities: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Which labels each image has: probability >= the label's threshold (a boolean (images, labels) matrix)."""
    return np.asarray(probabilities) >= np.asarray(thresholds, dtype=np.float64)[None, :]


def decision_confidence(probabilities: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """How sure the least sure yes-or-no of each image's label set is: min over labels of p (a label given) or 1 - p
    (a label not given); 1.0 for a model without labels."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape[1] == 0:
        return np.ones(len(probabilities))
    chosen = decide(probabilities, thresholds)
    return np.where(chosen, probabilities, 1.0 - probabilities).min(axis=1)
