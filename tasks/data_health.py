"""The data health report format: writes and reads data/reports/data_health/ (label_issues.csv, near_duplicates.csv,
outliers.csv, label_issues.png, summary.json, drift.json, drift_reference.npz), what the health stage found in the
labelled images.

The health stage writes the folder; the gate (the estimated noise rate, the drift warning), the run report, the
training flow's artifacts and `imgpipe relabel` read it through this module alone. summary.json holds the counts,
the estimated noise rate, the most confused class pairs and what the features were; drift.json how far the images
new since the last run sit from that run's images, per class (tasks/health/drift.py says how it is measured);
drift_reference.npz what the next run measures against (its bytes made by tasks/health/drift_reference.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks import atomic

if TYPE_CHECKING:  # pandas (and csv_cells, which imports it) where used: the gate's record reads summary.json alone
    import pandas as pd

LABEL_ISSUES = "label_issues.csv"  # path, given_label, suggested_label, score (lower: more likely wrong), split
NEAR_DUPLICATES = "near_duplicates.csv"  # path_a, path_b, cosine, labels and splits of both, leak
OUTLIERS = "outliers.csv"  # path, label, split, nearest_class, spread (robust z-score of the distance)
GALLERY = "label_issues.png"  # the top label issues, each captioned with its given and suggested label
SUMMARY = "summary.json"
DRIFT = "drift.json"  # status, note, new images, overall and per-class shift, threshold, warning (or null)
DRIFT_REFERENCE = "drift_reference.npz"  # per-class centres and spreads, and which images the run had
LABEL_ISSUE_COLUMNS = ["path", "given_label", "suggested_label", "score", "split"]


def _json_text(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(folder: Path, tables: dict[str, pd.DataFrame], summary: dict[str, Any],
          files: dict[str, bytes] | None = None, drift: dict[str, Any] | None = None) -> None:
    """The whole folder at once (a temporary folder renamed into place): the CSV tables, the other files (pictures,
    the drift reference), summary.json and, when given, drift.json."""
    from tasks import csv_cells

    with atomic.atomic_directory(folder) as temporary:
        for name, table in tables.items():
            csv_cells.safe_table(table).to_csv(temporary / name, index=False)  # paths, labels escaped
        for name, data in (files or {}).items():
            (temporary / name).write_bytes(data)
        (temporary / SUMMARY).write_text(_json_text(summary), encoding="utf-8")
        if drift is not None:
            (temporary / DRIFT).write_text(_json_text(drift), encoding="utf-8")


def _read_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when there is none (not written, unreadable, not an object)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_summary(folder: Path) -> dict[str, Any] | None:
    """summary.json, or None when the health stage has not written one (or it cannot be read)."""
    return _read_object(folder / SUMMARY)


def read_drift(folder: Path) -> dict[str, Any] | None:
    """drift.json, or None when the health stage has not written one (or it cannot be read)."""
    return _read_object(folder / DRIFT)


def read_drift_reference(folder: Path) -> bytes | None:
    """The bytes of drift_reference.npz, or None when there is none (a first run)."""
    try:
        return (folder / DRIFT_REFERENCE).read_bytes()
    except FileNotFoundError:
        return None


def estimated_noise_rate(folder: Path) -> float | None:
    """The share of images whose given label is estimated wrong (cleanlab's joint estimate), or None when unknown."""
    value = (read_summary(folder) or {}).get("label_issues", {}).get("estimated_noise_rate")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_label_issues(file: Path) -> pd.DataFrame:
    """A label issues table (label_issues.csv, or a copy a person trimmed): path, given_label, suggested_label, ...;
    a ValueError names the file and the missing column."""
    import pandas as pd

    from tasks import csv_cells

    if not file.is_file():
        raise ValueError(f"{file}: not found; the health stage writes data/reports/data_health/{LABEL_ISSUES}")
    table = csv_cells.exact_table(pd.read_csv(file, dtype=str, keep_default_na=False))
    missing = [column for column in ("path", "given_label", "suggested_label") if column not in table.columns]
    if missing:
        raise ValueError(f"{file}: no {missing[0]!r} column; give a table as the health stage writes it "
                         f"({', '.join(LABEL_ISSUE_COLUMNS)}), with the rows you accept")
    return table
