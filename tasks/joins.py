"""Lookups of text columns by key in Arrow: hash joins at 10^6 rows without a Python object per row (pandas' own
map, reindex and isin on text turn every value into a Python string first); pure computation, no I/O."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def text(values: Iterable[str]) -> pa.Array | pa.ChunkedArray:
    """The values as Arrow strings (a pandas str column's own buffers, not copied)."""
    if isinstance(values, pd.Index):
        values = pd.Series(values.array, dtype="str")
    elif not isinstance(values, pd.Series):
        values = pd.Series(values if isinstance(values, np.ndarray) else list(values), dtype="str")
    return pa.array(values.astype("str").array).cast(pa.large_string())  # .array: no index lookups


def positions(keys: Iterable[str], index: Iterable[str]) -> np.ndarray:
    """For each key, the position of its first occurrence in `index`, or -1."""
    found = pc.index_in(text(keys), value_set=text(index))
    return np.asarray(pc.fill_null(found, -1), dtype=np.int64)


def is_in(keys: Iterable[str], index: Iterable[str]) -> np.ndarray:
    """Whether each key occurs in `index` (a bool array)."""
    return np.asarray(pc.is_in(text(keys), value_set=text(index)), dtype=bool)


def lookup(keys: Iterable[str], table: pd.Series) -> pd.Series:
    """table[key] for each key, missing (NaN) where `table` (text values indexed by text) has no such key; the first
    of a repeated key. A Series with a fresh RangeIndex."""
    where = positions(keys, table.index)
    if not len(table):
        return pd.Series(pd.NA, index=pd.RangeIndex(len(where)), dtype="str")
    taken = pc.take(text(table), pa.array(np.where(where >= 0, where, 0)))
    return pd.Series(pc.if_else(pa.array(where >= 0), taken, pa.scalar(None, pa.large_string())), dtype="str")


def fixed_width(digests: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The text values as a numpy bytes array (S<width>), without a Python object per value when every value has
    the same length (sha256s: 64 hex digits)."""
    array = digests.combine_chunks() if isinstance(digests, pa.ChunkedArray) else digests
    array = array.cast(pa.large_binary())
    lengths = np.asarray(pc.binary_length(array)) if len(array) else np.zeros(0, dtype=np.int64)
    if len(array) and array.null_count == 0 and (lengths == lengths[0]).all() and lengths[0] > 0:
        width = int(lengths[0])
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset:array.offset + len(array) + 1]
        data = np.frombuffer(array.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
        return data.view(f"S{width}")
    return np.array([value or b"" for value in array.to_pylist()], dtype=bytes)
