"""The data health report format: writes and reads data/reports/data_health/ (label_issues.csv, near_duplicates.csv,
outliers.csv, label_issues.png, summary.json), what the health stage found in the labelled images.

The health stage writes the folder; the gate (the estimated noise rate), the run report and `imgpipe relabel` read
it through this module alone. summary.json holds the counts, the estimated noise rate, the most confused class
pairs and what the features were.
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
LABEL_ISSUE_COLUMNS = ["path", "given_label", "suggested_label", "score", "split"]


def write(folder: Path, tables: dict[str, pd.DataFrame], summary: dict[str, Any],
          pictures: dict[str, bytes] | None = None) -> None:
    """The whole folder at once (a temporary folder renamed into place): the CSV tables, pictures and summary.json."""
    from tasks import csv_cells

    with atomic.atomic_directory(folder) as temporary:
        for name, table in tables.items():
            csv_cells.safe_table(table).to_csv(temporary / name, index=False)  # paths, labels escaped
        for name, data in (pictures or {}).items():
            (temporary / name).write_bytes(data)
        (temporary / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                                         encoding="utf-8")


def read_summary(folder: Path) -> dict[str, Any] | None:
    """summary.json, or None when the health stage has not written one (or it cannot be read)."""
    try:
        summary = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


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
