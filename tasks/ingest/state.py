"""Ingest's memory between runs: reads the last manifest's shard locations and reads and writes
data/interim/ingest_state.parquet, one row per source file examined (its size and mtime then, its sha256 and
verdict), so that a run reads only the files that are new or changed."""

from __future__ import annotations

import logging
import tarfile
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from tasks import raw_store
from tasks.ingest.examine import VERDICT_FIELDS
from tasks.ingest.locations import Locations

logger = logging.getLogger(__name__)

STATE_COLUMNS = ["source_path", "checks", "size", "mtime_ns", "sha256", "bytes", *VERDICT_FIELDS]
LOCATION_COLUMNS = ("sha256", "shard", "offset", "bytes")


def empty() -> pd.DataFrame:
    return pd.DataFrame(columns=STATE_COLUMNS).set_index("source_path")


def load(path: Path) -> pd.DataFrame:
    """The state rows of the last run, indexed by source_path (empty when there is none, or it cannot be read)."""
    if not path.is_file():
        return empty()
    try:
        table = pd.read_parquet(path)
    except Exception as error:  # a damaged state only costs reading every file again
        logger.warning("%s: ignoring unreadable ingest state (%s); every file is examined again", path, error)
        return empty()
    if list(table.columns) != STATE_COLUMNS:
        logger.info("%s: written by another version of ingest; every file is examined again", path)
        return empty()
    return table.set_index("source_path")


def write(path: Path, records: pd.DataFrame) -> None:
    """Save the state of every file seen (columns as STATE_COLUMNS), in source_path order."""
    from tasks import atomic

    table = records[STATE_COLUMNS].sort_values("source_path", kind="stable").reset_index(drop=True)
    table = table.astype({"size": "int64", "mtime_ns": "int64", "bytes": "int64", "width": "int64",
                          "height": "int64", "orientation": "int64"})
    atomic.write_parquet(path, table, keep_if_same=True)


def stored_locations(manifest: Path, raw: Path) -> tuple[Locations, bool]:
    """sha256 -> where the raw store holds it, from the last manifest (as columns: tasks/ingest/locations.py) and from
    any shard it does not name (a run killed after writing shards but before its manifest); and whether the manifest
    is of the old loose-file layout."""
    locations = Locations()
    named: set[str] = set()
    old_layout = False
    if manifest.is_file():
        stored = set(pq.read_schema(manifest).names)
        if set(LOCATION_COLUMNS) <= stored:
            table = pd.read_parquet(manifest, columns=list(LOCATION_COLUMNS))
            locations = Locations(table)
            named = set(table["shard"].unique().tolist())
        else:
            old_layout = True
    for shard in raw_store.shard_names(raw):
        if shard not in named:
            try:
                recovered = raw_store.contents(raw, shard)
            except (OSError, tarfile.TarError) as error:
                logger.warning("%s: unreadable shard (%s); ignored, and removed at the end of the run", raw / shard,
                               error)
                continue
            logger.info("%s: %d image(s) from a shard no manifest names (an interrupted run); reused",
                        raw / shard, len(recovered))
            for sha256, location in recovered.items():
                locations.setdefault(sha256, location)
    return locations, old_layout
