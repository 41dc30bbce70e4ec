"""Assigns each image to train, val or test from its group's key and the seed; pure computation on a table."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tasks import label_sets
from tasks.params import GroupBy
from tasks import joins

SPLITS = ("train", "val", "test")


def unit_interval(key: str, seed: int) -> float:
    """A number in [0, 1) that depends only on the key and the seed."""
    digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def unit_intervals(keys: Iterable[str], seed: int) -> np.ndarray:
    """unit_interval() of each key (a hash each: given only the keys that need one)."""
    prefix = f"{seed}:"
    return np.fromiter((int.from_bytes(hashlib.sha256(f"{prefix}{key}".encode("utf-8")).digest()[:8], "big") / 2**64
                        for key in keys), dtype=np.float64)


def storage_orders(digests: Iterable[str], seed: int) -> np.ndarray:
    """Each image's `order` (see assign_splits) from its sha256."""
    return unit_intervals((f"order/{digest}" for digest in digests), seed)


def folder_subjects(paths: Iterable[str], level: int) -> pd.Series:
    """The name of the `level`-th folder below the class folder of each manifest path (`label/sub/.../file`)."""
    text = joins.text(paths)
    folders = np.asarray(pc.count_substring(text, "/")) - 1
    short = np.flatnonzero(folders < level)
    if len(short):
        path = text[int(short[0])].as_py()
        raise ValueError(
            f"preprocess.group_by folder:{level}: {path!r} has {folders[short[0]]} folder(s) between its class "
            f"folder and the file; use a level every image has, or group with csv:FILE:COLUMN")
    return pd.Series(pc.list_element(pc.split_pattern(text, "/"), level), dtype="str")


def csv_subjects(paths: Iterable[str], table: pd.DataFrame, column: str, csv_file: str) -> pd.Series:
    """Each path's subject from a table with a `path` column (as in the manifest) and the subject column."""
    where = f"preprocess.group_by: {csv_file}"
    for needed in ("path", column):
        if needed not in table.columns:
            raise ValueError(f"{where} has no column {needed!r} (columns: {', '.join(map(str, table.columns))})")
    table = table.assign(path=table["path"].astype(str).str.replace("\\", "/", regex=False).str.removeprefix("./"))
    blank = table[table[column].isna() | (table[column].astype(str).str.strip() == "")]
    if not blank.empty:
        raise ValueError(f"{where}: {len(blank)} row(s) have no {column!r}, e.g. {blank['path'].iloc[0]!r}")
    conflicting = table.groupby("path")[column].nunique()
    conflicting = conflicting[conflicting > 1]
    if not conflicting.empty:
        raise ValueError(f"{where}: {len(conflicting)} path(s) are listed with different {column!r}, "
                         f"e.g. {conflicting.index[0]!r}")
    subject_of = table.drop_duplicates("path").set_index("path")[column].astype(str)
    paths = pd.Series(joins.text(paths), dtype="str")
    subjects = joins.lookup(paths, subject_of)
    missing = paths[subjects.isna()]
    if len(missing):
        raise ValueError(f"{where} lists no {column!r} for {len(missing)} of {len(paths)} image(s), e.g. "
                         f"{', '.join(repr(path) for path in missing.iloc[:3])}; add a row per image (paths as in the "
                         f"manifest: label/.../file)")
    return subjects.astype("str")


def subjects_for(manifest: pd.DataFrame, group_by: GroupBy, csv_table: pd.DataFrame | None = None) -> pd.Series:
    """The subject of every manifest row as group_by names it (the CSV already read, for csv:FILE:COLUMN)."""
    if group_by.kind == "folder":
        return folder_subjects(manifest["path"], group_by.level)
    if csv_table is None:
        raise ValueError(f"preprocess.group_by {group_by}: the CSV table was not read")
    return csv_subjects(manifest["path"], csv_table, group_by.column, group_by.csv)


def split_units(groups: Iterable[str], subjects: Iterable[str] | None = None) -> pd.Series:
    """The key that decides each image's split: images linked by a near-duplicate group or by a subject share one.

    A unit is keyed by its smallest subject (or, without subjects, its near-duplicate group), so the key of an
    existing unit stays the same when images are added to it. The units are the connected components of the graph
    whose edges are the images (subject -- group), found in one pass of compiled code (no Python work per image).
    """
    keys = "group/" + pd.Series(joins.text(groups), dtype="str")
    if subjects is None:  # each image is in exactly one near-duplicate group: nothing to link
        return keys
    from scipy import sparse  # only with subjects: 25 MB of imports that the stage otherwise does without
    from scipy.sparse import csgraph

    named = pd.Series(joins.text(subjects), dtype="str").fillna("")
    linked = (named != "").to_numpy()
    codes, names = pd.factorize(pd.concat([keys, "subject/" + named[linked]], ignore_index=True))
    group_codes, subject_codes = codes[:len(keys)], codes[len(keys):]
    graph = sparse.coo_matrix((np.ones(len(subject_codes), dtype=np.int8), (subject_codes, group_codes[linked])),
                              shape=(len(names), len(names)))
    _, component = csgraph.connected_components(graph, directed=False)
    # a unit with a subject is named by its smallest subject, one without by its smallest group
    nodes = pd.DataFrame({"component": component, "name": pd.Series(names, dtype="str")})
    is_group = nodes["name"].str.startswith("group/").to_numpy()
    smallest = nodes[~is_group].groupby("component")["name"].min()
    smallest = smallest.combine_first(nodes[is_group].groupby("component")["name"].min())
    unit_of_component = joins.text(smallest.sort_index())  # every component has a name: 0, 1, ... in order
    return pd.Series(unit_of_component.take(pa.array(component[group_codes])), dtype="str")


def _hashed(positions: np.ndarray, val_fraction: float, test_fraction: float) -> np.ndarray:
    return np.where(positions < test_fraction, "test",
                    np.where(positions < test_fraction + val_fraction, "val", "train")).astype(object)


def _carved(given: np.ndarray, positions: np.ndarray, val_fraction: float, test_fraction: float,
            given_splits: set[str]) -> np.ndarray:
    """A given split, except that a given train image goes to val (test) by its hash when the source gives no val
    (test) split at all: a layout of train/ and test/ gets its validation split out of train/."""
    test_share = test_fraction if "test" not in given_splits else 0.0
    val_share = val_fraction if "val" not in given_splits else 0.0
    return np.where(given == "train", _hashed(positions, val_share, test_share), given)


def _first_per_unit(units: np.ndarray, values: np.ndarray) -> pd.Series:
    """unit -> the value of its first row."""
    first = pd.Series(values, index=pd.Index(units, dtype="str"), dtype="str")
    return first[~first.index.duplicated(keep="first")]


def assign_splits(manifest: pd.DataFrame, seed: int, val_fraction: float, test_fraction: float,
                  subjects: Iterable[str] | None = None,
                  kept: pd.Series | Mapping[str, str] | None = None) -> pd.DataFrame:
    """Return the manifest with `unit`, `split` and `order` columns.

    The split of an image follows from its unit's key (see split_units; a lone image is its own near-duplicate
    group, named by its content hash) and the seed only, so adding images never moves an existing one and a
    unit never straddles two splits. The hashed positions are uniform within every class, so each class is split
    in the requested proportions in expectation (stratified without depending on order or dataset size).

    A split the source gives (the manifest's `split` column: split folders or a label table) is kept; only a
    missing val or test split is carved out of the given train images by hash. `kept` (sha256 -> split) is an
    earlier run's assignment: those images keep their split whatever the hash says now (a new near-duplicate or
    subject may rename a unit). A new image without a given split joins the split its unit already has.

    The images in `kept` cost a vectorised join, no hash: only the others (the new ones) are hashed, so a run
    after 1% new images hashes 1% of them. `order` is a per-image pseudo-random key (storage_orders) in which new
    images are stored, a mix of classes in every shard; NaN for an image in `kept` (it is stored already).
    """
    count = len(manifest)
    units = split_units(manifest["group"], subjects)  # Arrow-backed text: no Python object per image
    digests = manifest["sha256"].reset_index(drop=True)
    given = (manifest["split"].fillna("").reset_index(drop=True) if "split" in manifest.columns
             else pd.Series("", index=units.index, dtype="str"))
    before = pd.Series(pd.NA, index=units.index, dtype="str")
    if kept is not None and len(kept):
        if not isinstance(kept, pd.Series):
            kept = pd.Series(dict(kept), dtype="str")
        before = joins.lookup(digests, kept.iloc[::-1])  # the last of a repeated sha256, as a dict would keep
    new = before.isna().to_numpy()
    given_splits = set(given[given != ""].unique().tolist())

    new_units, new_given = units[new].to_numpy(dtype=object), given[new].to_numpy(dtype=object)
    codes, distinct = pd.factorize(new_units)
    positions = unit_intervals(distinct, seed)[codes] if len(distinct) else np.zeros(0)
    computed = np.where(new_given != "", _carved(new_given, positions, val_fraction, test_fraction, given_splits),
                        _hashed(positions, val_fraction, test_fraction))
    # a unit's split, from images that keep theirs (the first in manifest order), then from given ones
    in_play = ~new & joins.is_in(units, distinct) if not new.all() else np.zeros(count, dtype=bool)
    has_given = new_given != ""
    anchors = _first_per_unit(units[in_play].to_numpy(dtype=object), before[in_play].to_numpy(dtype=object))
    anchors = anchors.combine_first(_first_per_unit(new_units[has_given], computed[has_given]))
    joined = anchors.reindex(pd.Index(new_units, dtype="str")).to_numpy(dtype=object)
    splits = before.copy()
    splits[new] = np.where(has_given | pd.isna(joined), computed, joined)
    order = np.full(count, np.nan)
    order[new] = storage_orders(digests[new].tolist(), seed)
    return manifest.assign(unit=units.set_axis(manifest.index), split=splits.set_axis(manifest.index), order=order)


SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}
FRACTION_KEYS = {"val": "preprocess.val_fraction", "test": "preprocess.test_fraction"}


def describe_splits(given: pd.Series, assigned: pd.Series, val_fraction: float, test_fraction: float) -> str:
    """One line on where each split came from: the source's own (split folders or a label table's split column) or
    carved out by hash; with advice to give a test split when the test images are carved out of the source's train
    images. "" when the source gives no split at all (every split is then by hash, as the fractions say)."""
    given_splits = [split for split in SPLITS if (given == split).any()]
    if not given_splits:
        return ""
    parts = [f"{split} is the source's own {split}/ ({int((assigned == split).sum())} images)"
             for split in given_splits]
    fractions = {"val": val_fraction, "test": test_fraction}
    carved = [split for split in ("val", "test") if split not in given_splits]
    for split in carved:
        count = int(((given == "train") & (assigned == split)).sum())
        parts.append(f"{split} is carved out of the source's train/ by hash ({count} images, "
                     f"{FRACTION_KEYS[split]} {fractions[split]:g})")
    sentence = "splits: " + "; ".join(parts)
    if "test" in carved:
        sentence += ("; to test on images you chose, give a test/ folder beside train/ (or a test split in the label "
                     "table)")
    return sentence


def split_counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Images per class in each split, for the split report (a multi-label image counts for each of its labels):
    counted per distinct label cell, then spread over the cell's labels."""
    counts: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
    for (split, cell), count in table.groupby(["split", "label"]).size().items():
        if split in counts:
            for label in label_sets.split(cell):
                counts[split][label] = counts[split].get(label, 0) + int(count)
    return {split: dict(sorted(per_label.items())) for split, per_label in counts.items()}


def split_report(table: pd.DataFrame, seed: int, val_fraction: float, test_fraction: float,
                 group_by: GroupBy | None) -> dict[str, Any]:
    """Split sizes, shares and per-class counts, and how many units (kept-together groups) each split holds."""
    counts = split_counts(table)
    labels = label_sets.vocabulary(table["label"].unique().tolist())
    total = len(table)
    sizes = {split: int((table["split"] == split).sum()) for split in SPLITS}
    units = joins.text(table["unit"])  # counted in Arrow: a unit per image is 10^6 keys at 10^6 images
    in_split = {split: pa.array((table["split"] == split).to_numpy(dtype=bool)) for split in SPLITS}
    return {
        "seed": seed,
        "requested": {"train": round(1 - val_fraction - test_fraction, 6), "val": val_fraction, "test": test_fraction},
        "group_by": None if group_by is None else str(group_by),
        "images": sizes,
        "shares": {split: round(sizes[split] / total, 4) if total else 0.0 for split in SPLITS},
        "units": {split: pc.count_distinct(pc.filter(units, in_split[split])).as_py() for split in SPLITS},
        "largest_unit": int(pc.max(pc.value_counts(units).field("counts")).as_py()) if total else 0,
        "per_class": {label: {split: counts[split].get(label, 0) for split in SPLITS} for label in labels},
        "classes_missing": {split: [label for label in labels if counts[split].get(label, 0) == 0] for split in SPLITS},
    }
