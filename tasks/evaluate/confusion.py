"""The confusion counts of a single-label model kept sparse, so that they grow with the test images and not with the
square of the classes (10,000 classes made a dense matrix of 10^8 cells); pure computation, reads and writes nothing.

What is drawn is capped (the most confused classes); the full numbers stay in a compact table: the square matrix
while it is small, above MAX_SQUARE_CLASSES one row per non-zero cell (actual, predicted, images).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MAX_SQUARE_CLASSES = 100  # 10,000 cells; above this confusion_matrix.csv lists the non-zero cells only


def pair_counts(true_index: np.ndarray, predicted_index: np.ndarray) -> pd.DataFrame:
    """One row per (actual, predicted) pair that occurs: actual, predicted (class indices) and images."""
    pairs = pd.DataFrame({"actual": np.asarray(true_index, dtype=np.int64),
                          "predicted": np.asarray(predicted_index, dtype=np.int64)})
    counts = pairs.groupby(["actual", "predicted"], sort=True).size()
    return counts.rename("images").reset_index()


def errors_per_class(pairs: pd.DataFrame, num_classes: int) -> np.ndarray:
    """Mistakes that involve each class: its images predicted as another, and other images predicted as it."""
    wrong = pairs[pairs["actual"] != pairs["predicted"]]
    return (np.bincount(wrong["actual"], weights=wrong["images"], minlength=num_classes)
            + np.bincount(wrong["predicted"], weights=wrong["images"], minlength=num_classes))


def most_confused(errors: np.ndarray, limit: int) -> np.ndarray:
    """The indices of at most `limit` classes with the most mistakes (ties: the lower index), in index order."""
    if len(errors) <= limit:
        return np.arange(len(errors))
    order = np.lexsort((np.arange(len(errors)), -np.asarray(errors)))
    return np.sort(order[:limit])


def sub_matrix(pairs: pd.DataFrame, classes: np.ndarray) -> np.ndarray:
    """The dense confusion matrix (rows: actual) restricted to `classes`, in their order."""
    position = pd.Series(np.arange(len(classes)), index=classes)
    inside = pairs[pairs["actual"].isin(classes) & pairs["predicted"].isin(classes)]
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(matrix, (position[inside["actual"]].to_numpy(), position[inside["predicted"]].to_numpy()),
              inside["images"].to_numpy())
    return matrix


def csv_table(pairs: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """confusion_matrix.csv: the square matrix (a row per actual class, a column per predicted one) up to
    MAX_SQUARE_CLASSES classes, else one row per non-zero cell: actual, predicted, images."""
    if len(labels) <= MAX_SQUARE_CLASSES:
        matrix = sub_matrix(pairs, np.arange(len(labels)))
        return pd.DataFrame(matrix, index=pd.Index(labels, name="actual"), columns=labels).reset_index()
    names = np.asarray(labels, dtype=object)
    return pd.DataFrame({"actual": names[pairs["actual"].to_numpy()], "predicted": names[pairs["predicted"].to_numpy()],
                         "images": pairs["images"].to_numpy()})
