"""The manifest's file format: writes and reads data/interim/manifest.parquet, one row per image used.

On disk the manifest leaves out what it can rebuild, because it is rewritten and pushed whole after every ingest
that changes anything: `group` is empty for an image that is its own near-duplicate group (most images; the
group is then its sha256) and `source_path`, always equal to `path`, is not stored. read() gives the full table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from tasks import atomic

COLUMNS = ["path", "label", "sha256", "shard", "offset", "bytes", "width", "height", "format", "mode",
           "orientation", "phash", "group", "source_path", "split", "subject", "link_target"]


def write(path: Path, table: pd.DataFrame, keep_if_same: bool = False) -> None:
    """Write the manifest at `path` atomically, in its compact form."""
    compact = table.assign(group=table["group"].where(table["group"] != table["sha256"], ""))
    if "source_path" in compact.columns:
        if not (compact["source_path"] == compact["path"]).all():
            raise ValueError("a manifest's source_path must equal its path")
        compact = compact.drop(columns="source_path")
    atomic.write_parquet(path, compact, keep_if_same=keep_if_same)


def read(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The manifest at `path` with every column (a manifest written before the compact form reads the same), or
    only those of `columns` it has (a stage that needs a few reads a few: at 10^6 images each text column is tens
    of MB)."""
    if columns is None:
        table = pd.read_parquet(path)
    else:
        stored = set(pq.read_schema(path).names)
        needed = [column for column in columns if column in stored]
        if "group" in needed and "sha256" not in needed and "sha256" in stored:
            needed.append("sha256")  # an empty group stands for the sha256
        table = pd.read_parquet(path, columns=needed)
    if "group" in table.columns and "sha256" in table.columns:
        table["group"] = table["group"].where(table["group"] != "", table["sha256"])
    if "source_path" not in table.columns and "path" in table.columns and (columns is None or "source_path" in columns):
        table["source_path"] = table["path"]
    ordered = [column for column in COLUMNS if column in table.columns]
    return table[ordered + [column for column in table.columns if column not in ordered]]
