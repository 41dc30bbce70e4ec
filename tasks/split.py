"""Assigns each image to train, val or test from its group's content hash and the seed; pure computation on a table."""

from __future__ import annotations

import hashlib

import pandas as pd

SPLITS = ("train", "val", "test")


def unit_interval(key: str, seed: int) -> float:
    """A number in [0, 1) that depends only on the key and the seed."""
    digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(manifest: pd.DataFrame, seed: int, val_fraction: float, test_fraction: float) -> pd.DataFrame:
    """Return the manifest with `split` and `order` columns.

    The split of an image follows from its group (near-duplicates share one; a lone image is its own group,
    named by its content hash) and the seed only, so adding images never moves an existing one and a group
    never straddles two splits. The hashed positions are uniform within every class, so each class is split
    in the requested proportions in expectation (stratified without depending on order or dataset size).
    """
    positions = [unit_interval(f"group/{group}", seed) for group in manifest["group"]]
    splits = ["test" if position < test_fraction else "val" if position < test_fraction + val_fraction else "train"
              for position in positions]
    # `order` is a per-image pseudo-random key: shards are written in this order so that each holds a mix of classes
    order = [unit_interval(f"order/{digest}", seed) for digest in manifest["sha256"]]
    return manifest.assign(split=splits, order=order)


def split_counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Images per class in each split, for the split report."""
    counts = table.groupby(["split", "label"]).size()
    return {split: {label: int(count) for label, count in counts[split].items()} if split in counts.index.get_level_values(0)
            else {} for split in SPLITS}
