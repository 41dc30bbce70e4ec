"""Puts the split table in storage order (by shard, then by each image's `order`) from the last table's row order,
hashing only the images that are new to their shard; pure computation on tables.

The split table is written in storage order, and an image's `order` depends only on its sha256 and the seed, so under
the same seed the last table's rows of one shard are in `order` already: an image that stays in its shard keeps its
place among them without its order being computed. Only the images new to a shard need their order (assign_splits
computes it for the new images): in a shard of new images alone it is sorted by; in a shard holding both (the one
shard "" of the features route, where every image is listed without pixels), each new image is placed among those
that stayed by a binary search that computes the order of O(log n) of them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tasks import joins
from tasks.preprocess.split import storage_orders


def last_places(table: pd.DataFrame) -> pd.DataFrame:
    """sha256 -> `shard` and `row` of each image in a split table written in storage order (the last run's)."""
    return pd.DataFrame({"shard": pd.Series(table["shard"].array, dtype="str").array, "row": np.arange(len(table))},
                        index=pd.Index(table["sha256"].array, dtype="str"))  # joins take a repeated key's first


def _insertion_points(sorted_digests: pa.Array | pa.ChunkedArray, orders: np.ndarray, seed: int) -> np.ndarray:
    """For each order, how many of the images (sha256s in storage order) have an order <= it (bisect_right): one
    binary search for all of them at once, hashing only the images it compares with (the middles of each step)."""
    low = np.zeros(len(orders), dtype=np.int64)
    high = np.full(len(orders), len(sorted_digests), dtype=np.int64)
    while (searching := low < high).any():
        middle = (low + high) // 2
        needed = np.unique(middle[searching])
        known = storage_orders(sorted_digests.take(pa.array(needed)).to_pylist(), seed)
        at_middle = known[np.searchsorted(needed, np.minimum(middle, needed[-1]))]
        right = searching & (at_middle <= orders)
        left = searching & ~right
        low[right] = middle[right] + 1
        high[left] = middle[left]
    return low


def in_storage_order(table: pd.DataFrame, last: pd.DataFrame | None, seed: int) -> pd.DataFrame:
    """The table (columns sha256, shard and order, NaN where not computed) sorted by shard and then by order, as
    if every order were known; `last` is last_places() of the last table when it was written under this seed.
    The order of an image new to its shard is filled in; that of one that stayed in its shard may stay NaN."""
    table = table.reset_index(drop=True)
    shard = table["shard"].astype("str")
    order = table["order"].to_numpy(dtype=np.float64, copy=True)
    stays = np.zeros(len(table), dtype=bool)
    rows = np.zeros(len(table), dtype=np.int64)
    if last is not None and len(last):
        where = joins.positions(table["sha256"], last.index)
        found = where >= 0
        was_in = joins.text(last["shard"]).take(pa.array(np.where(found, where, 0)))
        stays = found & np.asarray(pc.equal(was_in, joins.text(shard)), dtype=bool)
        rows[stays] = last["row"].to_numpy()[where[stays]]
    lacking = ~stays & np.isnan(order)
    order[lacking] = storage_orders(table["sha256"][lacking].tolist(), seed)
    # the sort key within a shard: a staying image at 2 * its last row + 1; a new one at 2 * the last row of the
    # staying image it comes before (then by its order among the new ones placed there)
    place = np.where(stays, 2 * rows + 1, 0)
    mixed = np.intersect1d(shard[stays].unique(), shard[~stays].unique())
    for name in mixed.tolist():
        in_shard = (shard == name).to_numpy(dtype=bool)
        staying = np.flatnonzero(stays & in_shard)
        staying = staying[np.argsort(rows[staying], kind="stable")]
        moved = np.flatnonzero(~stays & in_shard)
        after = _insertion_points(joins.text(table["sha256"]).take(pa.array(staying)), order[moved], seed)
        last_row = rows[staying[-1]]
        place[moved] = np.where(after < len(staying), 2 * rows[staying[np.minimum(after, len(staying) - 1)]],
                                2 * last_row + 2)
    keyed = table.assign(shard=shard, order=order, _place=place, _order=np.nan_to_num(order))
    keyed = keyed.sort_values(["shard", "_place", "_order"], kind="stable")
    return keyed.drop(columns=["_place", "_order"]).reset_index(drop=True)
