"""The label table format (ingest.labels: a CSV or Parquet file of path, label[, split][, group]): reads it for
ingest, writes it for `imgpipe relabel`.

`path` is relative to ingest.source; `label` holds one label, or several separated by ";" (multi-label); `split`
(train, val or valid or validation, test; empty for none) and `group` (a subject kept in one split) are optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks import atomic

REQUIRED = ("path", "label")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
LABEL_SEPARATOR = ";"


@dataclass(frozen=True)
class Row:
    label: str  # canonical: several labels sorted and joined with ";"
    split: str  # train, val, test, or "" for none given
    subject: str  # "" for none


def parse(value: str) -> Path:
    """The table file of `ingest.labels` ("csv:FILE", "parquet:FILE" or a FILE ending .csv or .parquet)."""
    kind, separator, rest = value.partition(":")
    if separator and kind in ("csv", "parquet") and rest.strip():
        return Path(rest.strip())
    if Path(value).suffix.lower() in (".csv", ".parquet"):
        return Path(value)
    raise ValueError(f"ingest.labels must be csv:FILE, parquet:FILE or a .csv/.parquet file, got {value!r}")


def canonical_labels(cell: str) -> str:
    """"b; a;a" -> "a;b": the labels of a cell, unique, sorted, joined; "" for none."""
    return LABEL_SEPARATOR.join(sorted({part.strip() for part in str(cell).split(LABEL_SEPARATOR) if part.strip()}))


def _read_table(file: Path) -> pd.DataFrame:
    """The table, or a ValueError that names the file and the problem but never quotes what the file holds."""
    try:
        if file.suffix.lower() == ".parquet":
            return pd.read_parquet(file)
        return pd.read_csv(file, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:  # line and field counts, no content
        problem = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    except Exception as error:  # other readers' messages may quote the bytes they choked on
        problem = type(error).__name__
    kind = "Parquet" if file.suffix.lower() == ".parquet" else "CSV"
    raise ValueError(f"ingest.labels: {file} cannot be read as a {kind} table ({problem}); give a CSV or Parquet "
                     "file of path and label columns")


def read(file: Path) -> dict[str, Row]:
    """Relative path (posix, no leading ./) -> its row; a missing column, a bad split or a path listed twice with
    different labels is a ValueError naming the file, the line and what to change.

    The messages never quote the file's cells or header (a file that is not a label table may be private): they
    give line numbers, and the path of a file listed twice.
    """
    if not file.is_file():
        raise ValueError(f"ingest.labels: {file} not found; give a CSV or Parquet file of path and label columns")
    table = _read_table(file)
    missing = [column for column in REQUIRED if column not in table.columns]
    if missing:
        raise ValueError(f"ingest.labels: {file} has no {missing[0]!r} column ({len(table.columns)} columns, none "
                         "named so); it needs a header of path and label, optionally split and group")
    table = table.fillna("").astype(str)
    paths = table["path"].str.replace("\\", "/", regex=False).str.strip().str.removeprefix("./")
    splits = table["split"].str.strip().str.lower() if "split" in table.columns else pd.Series("", index=table.index)
    bad = splits[(splits != "") & ~splits.isin(SPLIT_NAMES)]
    if not bad.empty:
        raise ValueError(f"ingest.labels: {file}: the split of {_where(file, bad.index[0])} is not one of "
                         f"{', '.join(SPLIT_NAMES)} (or empty); {len(bad)} row(s) so")
    subjects = table["group"].str.strip() if "group" in table.columns else pd.Series("", index=table.index)
    rows: dict[str, Row] = {}
    first_row: dict[str, int] = {}
    for index, path, label, split, subject in zip(table.index, paths, table["label"], splits, subjects):
        row = Row(canonical_labels(label), SPLIT_NAMES.get(split, ""), subject)
        if path in rows and rows[path] != row:
            first = _where(file, first_row[path])
            raise ValueError(f"ingest.labels: {file} lists {path!r} twice, differently ({first} and "
                             f"{_where(file, index)}); keep one row per file")
        rows[path] = row
        first_row.setdefault(path, index)
    return rows


def read_raw(file: Path) -> pd.DataFrame:
    """The table as written, every column kept as text (for rewriting it with some labels changed)."""
    if not file.is_file():
        raise ValueError(f"ingest.labels: {file} not found; give a CSV or Parquet file of path and label columns")
    table = _read_table(file)
    if file.suffix.lower() == ".parquet":
        table = table.astype(object).where(table.notna(), "").astype(str)
    for column in REQUIRED:
        if column not in table.columns:
            raise ValueError(f"ingest.labels: {file} has no {column!r} column; it needs a header of path and label")
    return table


def normalised_path(path: str) -> str:
    """A table's path as ingest matches it: forward slashes, no leading ./, no surrounding spaces."""
    return str(path).replace("\\", "/").strip().removeprefix("./")


def write(file: Path, table: pd.DataFrame) -> None:
    """The table at `file` (CSV or Parquet by its suffix), atomically."""
    if file.suffix.lower() == ".parquet":
        atomic.write_parquet(file, table)
    else:
        atomic.write_csv(file, table)


def _where(file: Path, index: int) -> str:
    """Row `index` (from 0) as a person finds it: a CSV's line (after the header), a Parquet table's row."""
    return f"row {index + 1}" if file.suffix.lower() == ".parquet" else f"line {index + 2}"
