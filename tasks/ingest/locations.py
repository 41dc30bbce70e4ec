"""Where the raw store holds each image's bytes (sha256 -> raw_store.Location) during an ingest run; reads and writes
nothing.

At 10^6 images a dict of Location tuples costs about 750 MB of Python objects and 10 s to build. Here the last
manifest's locations stay columns (Arrow text, int64) and are looked up a column at a time; the images stored or
recovered in this run (a few) are in a dict; a single lookup (for an image just read) goes through a sorted array of
the sha256s as fixed-width bytes, built on the first such lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from tasks import joins, raw_store

COLUMNS = ["sha256", "shard", "offset", "bytes"]


class Locations:
    """sha256 -> raw_store.Location, as a mapping (`in`, [], get, setdefault, []= for one image at a time) and a
    column at a time (`contain`, `columns`, `ends`) for all of them."""

    def __init__(self, table: pd.DataFrame | None = None) -> None:
        """`table`: the columns sha256, shard, offset, bytes (the last manifest's; a repeated sha256's first row)."""
        if table is None:
            table = pd.DataFrame({"sha256": pd.Series([], dtype="str"), "shard": pd.Series([], dtype="str"),
                                  "offset": pd.Series([], dtype="int64"), "bytes": pd.Series([], dtype="int64")})
        self._table = table[COLUMNS].reset_index(drop=True)
        self._added: dict[str, raw_store.Location] = {}
        self._sorted: np.ndarray | None = None  # the table's sha256s, sorted (S64), and their rows
        self._rows: np.ndarray | None = None

    # one image at a time
    def _row(self, sha256: str) -> int:
        if self._sorted is None:
            keys = joins.fixed_width(joins.text(self._table["sha256"]))
            self._rows = np.argsort(keys, kind="stable")
            self._sorted = keys[self._rows]
        key = sha256.encode("utf-8")
        where = int(np.searchsorted(self._sorted, key))
        if where < len(self._sorted) and self._sorted[where] == key:
            return int(self._rows[where])
        return -1

    def get(self, sha256: str) -> raw_store.Location | None:
        if sha256 in self._added:
            return self._added[sha256]
        row = self._row(sha256) if len(self._table) else -1
        if row < 0:
            return None
        shard, offset, size = self._table.iloc[row][["shard", "offset", "bytes"]]
        return raw_store.Location(str(shard), int(offset), int(size), sha256)

    def __contains__(self, sha256: object) -> bool:
        return isinstance(sha256, str) and self.get(sha256) is not None

    def __getitem__(self, sha256: str) -> raw_store.Location:
        location = self.get(sha256)
        if location is None:
            raise KeyError(sha256)
        return location

    def __setitem__(self, sha256: str, location: raw_store.Location) -> None:
        self._added[sha256] = location

    def setdefault(self, sha256: str, location: raw_store.Location) -> raw_store.Location:
        found = self.get(sha256)
        if found is None:
            self._added[sha256] = found = location
        return found

    def __len__(self) -> int:
        return len(self._table) + len(self._added)

    def __iter__(self) -> Iterator[str]:
        yield from self._table["sha256"].tolist()
        yield from self._added

    # a column at a time
    def _all(self) -> pd.DataFrame:
        """Every location as one table (the added ones after the manifest's)."""
        if not self._added:
            return self._table
        added = pd.DataFrame([(sha256, *location[:3]) for sha256, location in self._added.items()], columns=COLUMNS)
        return pd.concat([self._table, added.astype({"sha256": "str", "shard": "str"})], ignore_index=True)

    def contain(self, hashes: pd.Series) -> np.ndarray:
        """Whether the raw store holds each sha256 (a bool array)."""
        found = joins.is_in(hashes, self._table["sha256"]) if len(self._table) else np.zeros(len(hashes), dtype=bool)
        if self._added:
            found |= joins.is_in(hashes, list(self._added))
        return found

    def columns(self, hashes: pd.Series) -> pd.DataFrame:
        """The shard and offset of each sha256 (every one must be held), as columns in the order of `hashes`."""
        every = self._all()
        where = joins.positions(hashes, every["sha256"])
        if (where < 0).any():
            missing = pd.Series(hashes).reset_index(drop=True)[where < 0].iloc[0]
            raise KeyError(missing)
        return pd.DataFrame({"shard": every["shard"].take(where).to_numpy(),
                             "offset": every["offset"].to_numpy()[where]}).astype({"shard": "str"})

    def ends(self) -> pd.Series:
        """shard -> the least size it needs to hold its images (raw_store.end_of of its locations)."""
        every = self._all()
        padded = every["offset"] + -(-every["bytes"] // raw_store.BLOCK) * raw_store.BLOCK
        last = padded.groupby(every["shard"]).max()
        return -(-(last + 2 * raw_store.BLOCK) // raw_store.END_OF_ARCHIVE) * raw_store.END_OF_ARCHIVE

    def in_shard(self, shard: str) -> list[raw_store.Location]:
        """The locations of one shard (to verify it)."""
        every = self._all()
        rows = every[(every["shard"] == shard).to_numpy()]
        return [raw_store.Location(shard, int(offset), int(size), str(sha256))
                for sha256, offset, size in zip(rows["sha256"].tolist(), rows["offset"].tolist(),
                                                rows["bytes"].tolist())]

    def forget(self, shards: Iterable[str]) -> set[str]:
        """Remove the images held by these shards; return their sha256s."""
        shards = set(shards)
        if not shards:
            return set()
        dropped = self._table["shard"].isin(shards).to_numpy()
        lost = set(self._table.loc[dropped, "sha256"].tolist())
        self._table = self._table[~dropped].reset_index(drop=True)
        self._sorted = self._rows = None
        for sha256 in [sha256 for sha256, location in self._added.items() if location.shard in shards]:
            lost.add(sha256)
            del self._added[sha256]
        return lost
