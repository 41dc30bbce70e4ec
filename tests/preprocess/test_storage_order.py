"""The split table's storage order: as a sort by every image's order, with only the images new to a shard hashed."""

import numpy as np
import pandas as pd

from tasks.preprocess import split, storage_order


def _digests(start: int, count: int) -> list[str]:
    return [f"{(start + index) * 2654435761 % 2**64:064x}" for index in range(count)]


def test_new_images_are_placed_among_the_stored_ones_as_a_full_sort_would(monkeypatch):
    seed = 4
    stored = _digests(0, 5000)
    last = pd.DataFrame({"sha256": stored, "shard": [""] * 2500 + ["a"] * 1250 + ["b"] * 1250})
    last = last.assign(order=split.storage_orders(stored, seed)).sort_values(["shard", "order"], kind="stable")
    kept = last.iloc[::3].assign(order=np.nan)  # a third of the images stay, in shards "" (features), a and b
    new = pd.DataFrame({"sha256": _digests(10**6, 200), "shard": [""] * 150 + ["c"] * 50})
    new = new.assign(order=split.storage_orders(new["sha256"], seed))
    moved = last.iloc[1::3].head(40).assign(shard="compacted", order=np.nan)  # copied into a new shard: not kept
    table = pd.concat([kept, new, moved], ignore_index=True).sample(frac=1, random_state=3).reset_index(drop=True)

    hashed = []
    real = split.storage_orders
    monkeypatch.setattr(storage_order, "storage_orders",
                        lambda digests, seed: hashed.extend(digests) or real(digests, seed))
    result = storage_order.in_storage_order(table, storage_order.last_places(last.reset_index(drop=True)), seed)
    assert len(hashed) <= 40 + 150 * 12  # the moved ones, and O(log n) comparisons per new image in shard ""

    every = table.assign(order=real(table["sha256"], seed)).sort_values(["shard", "order"], kind="stable")
    assert result["sha256"].tolist() == every["sha256"].tolist()
    assert result.loc[result["sha256"].isin(new["sha256"]), "order"].notna().all()
    # without the last table (another seed, or none): every image's order computed and sorted by
    alone = storage_order.in_storage_order(table, None, seed)
    assert alone["sha256"].tolist() == every["sha256"].tolist() and alone["order"].notna().all()
