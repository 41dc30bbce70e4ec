"""What the last validation checked: reads and writes checked_rows.parquet in data/reports/validation/.

One row per manifest row that passed every per-row check: a 64-bit key of the values those checks read. The file's
metadata says what they were checked under (the checks' version, the params, the versions of Great Expectations and
pandas, whose hash the keys are) and holds digests of the inputs and of the result of the report beside it. The
validate stage writes it last, so a killed run leaves the earlier file, which names only rows that were checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks import atomic

logger = logging.getLogger(__name__)

STATE_FILE = "checked_rows.parquet"
METADATA_KEY = b"imgpipe.validate"


@dataclasses.dataclass(frozen=True)
class State:
    keys: np.ndarray  # uint64, sorted and unique: the rows that passed every per-row check
    fingerprint: dict[str, Any]  # what the keys were checked under; another fingerprint makes them worthless
    inputs: str  # digest of what the table-level checks and the summary read (see stage.py)
    result: str  # digest of the report's result (verdict, checks, facts, summary), as written beside this file
    unpassed: int  # rows of that manifest not among `keys`: failed, or not named by Great Expectations


def digest(value: Any) -> str:
    """A stable sha256 of a JSON-able value (dict keys sorted; what JSON cannot hold as its str)."""
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def row_keys(manifest: pd.DataFrame, identity_column: str, value_columns: tuple[str, ...],
             presence_columns: tuple[str, ...]) -> np.ndarray:
    """A 64-bit key per row: of its identity (the content's sha256), of the values of `value_columns` and of whether
    `presence_columns` hold a value. Equal keys mean equal per-row verdicts, as long as the per-row checks read no more.

    A presence column is one whose every value passes when it is there: the path, which moving a file changes
    without changing any verdict, and whose hashing would cost as much as all the rest.
    """
    table = manifest.loc[:, list(value_columns)]  # few distinct values each: pandas hashes each distinct value once
    for column in presence_columns:
        table[f"{column} present"] = manifest[column].notna()
    values = pd.util.hash_pandas_object(table, index=False).to_numpy(dtype=np.uint64)
    identity = pd.util.hash_pandas_object(manifest[identity_column], index=False, categorize=False)
    return (values * np.uint64(0x9E3779B97F4A7C15)) ^ identity.to_numpy(dtype=np.uint64)  # wraps around, as meant


def read(path: Path, fingerprint: dict[str, Any]) -> State | None:
    """The state at `path`; None when there is none, it cannot be read, or it was checked under another fingerprint."""
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
        metadata = json.loads((table.schema.metadata or {})[METADATA_KEY])
        state = State(keys=table.column("key").to_numpy().astype(np.uint64, copy=False), **metadata)
    except (OSError, KeyError, TypeError, ValueError, pa.ArrowException) as error:
        logger.warning("%s: unreadable (%s); every row is checked again", path, error)
        return None
    if digest(state.fingerprint) != digest(fingerprint):  # compared as JSON: tuples are lists there
        logger.info("%s: written under other checks or params; every row is checked again", path)
        return None
    return state


def write(path: Path, state: State) -> None:
    """Write the state atomically; a file that already holds exactly these bytes is left untouched."""
    metadata = {field.name: getattr(state, field.name) for field in dataclasses.fields(State) if field.name != "keys"}
    table = pa.table({"key": pa.array(state.keys, type=pa.uint64())})
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True, default=str)})
    with atomic.atomic_path(path, keep_if_same=True) as temporary:
        pq.write_table(table, temporary, compression="zstd")
