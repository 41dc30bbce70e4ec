"""Assigns each image to train, val or test from its group's key and the seed; pure computation on a table."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from tasks import label_sets
from tasks.params import GroupBy
from tasks.union_find import UnionFind

SPLITS = ("train", "val", "test")


def unit_interval(key: str, seed: int) -> float:
    """A number in [0, 1) that depends only on the key and the seed."""
    digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def folder_subjects(paths: Iterable[str], level: int) -> list[str]:
    """The name of the `level`-th folder below the class folder of each manifest path (`label/sub/.../file`)."""
    subjects = []
    for path in paths:
        parts = path.split("/")
        if len(parts) - 2 < level:
            raise ValueError(
                f"preprocess.group_by folder:{level}: {path!r} has {len(parts) - 2} folder(s) between its class "
                f"folder and the file; use a level every image has, or group with csv:FILE:COLUMN")
        subjects.append(parts[level])
    return subjects


def csv_subjects(paths: Iterable[str], table: pd.DataFrame, column: str, csv_file: str) -> list[str]:
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
    subject_of: Mapping[str, Any] = dict(zip(table["path"], table[column].astype(str)))
    paths = list(paths)
    missing = [path for path in paths if path not in subject_of]
    if missing:
        raise ValueError(f"{where} lists no {column!r} for {len(missing)} of {len(paths)} image(s), e.g. "
                         f"{', '.join(repr(path) for path in missing[:3])}; add a row per image (paths as in the "
                         f"manifest: label/.../file)")
    return [subject_of[path] for path in paths]


def subjects_for(manifest: pd.DataFrame, group_by: GroupBy, csv_table: pd.DataFrame | None = None) -> list[str]:
    """The subject of every manifest row as group_by names it (the CSV already read, for csv:FILE:COLUMN)."""
    if group_by.kind == "folder":
        return folder_subjects(manifest["path"], group_by.level)
    if csv_table is None:
        raise ValueError(f"preprocess.group_by {group_by}: the CSV table was not read")
    return csv_subjects(manifest["path"], csv_table, group_by.column, group_by.csv)


def split_units(groups: Iterable[str], subjects: Iterable[str] | None = None) -> list[str]:
    """The key that decides each image's split: images linked by a near-duplicate group or by a subject share one.

    A unit is keyed by its smallest subject (or, without subjects, its near-duplicate group), so the key of an
    existing unit stays the same when images are added to it.
    """
    keys = [f"group/{group}" for group in groups]
    if subjects is None:  # each image is in exactly one near-duplicate group: nothing to link
        return keys
    linked = [[f"subject/{subject}", key] if subject else [key] for subject, key in zip(subjects, keys)]

    def rank(name: str) -> tuple[bool, str]:  # a unit with a subject is named by its smallest subject
        return name.startswith("group/"), name

    units = UnionFind(rank)
    for names in linked:
        for name in names[1:]:
            units.union(names[0], name)
    return [units.find(names[0]) for names in linked]


def _hashed(position: float, val_fraction: float, test_fraction: float) -> str:
    return "test" if position < test_fraction else "val" if position < test_fraction + val_fraction else "train"


def _carved(given: str, position: float, val_fraction: float, test_fraction: float, given_splits: set[str]) -> str:
    """A given split, except that a given train image goes to val (test) by its hash when the source gives no val
    (test) split at all: a layout of train/ and test/ gets its validation split out of train/."""
    if given != "train":
        return given
    test_share = test_fraction if "test" not in given_splits else 0.0
    val_share = val_fraction if "val" not in given_splits else 0.0
    return _hashed(position, val_share, test_share)


def assign_splits(manifest: pd.DataFrame, seed: int, val_fraction: float, test_fraction: float,
                  subjects: Iterable[str] | None = None, kept: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Return the manifest with `unit`, `split` and `order` columns.

    The split of an image follows from its unit's key (see split_units; a lone image is its own near-duplicate
    group, named by its content hash) and the seed only, so adding images never moves an existing one and a
    unit never straddles two splits. The hashed positions are uniform within every class, so each class is split
    in the requested proportions in expectation (stratified without depending on order or dataset size).

    A split the source gives (the manifest's `split` column: split folders or a label table) is kept; only a
    missing val or test split is carved out of the given train images by hash. `kept` (sha256 -> split) is an
    earlier run's assignment: those images keep their split whatever the hash says now (a new near-duplicate or
    subject may rename a unit). A new image without a given split joins the split its unit already has.
    """
    units = split_units(manifest["group"], subjects)
    positions = [unit_interval(unit, seed) for unit in units]
    given = manifest["split"].tolist() if "split" in manifest.columns else [""] * len(manifest)
    given_splits = {split for split in given if split}
    splits = [_carved(split, position, val_fraction, test_fraction, given_splits) if split
              else _hashed(position, val_fraction, test_fraction) for split, position in zip(given, positions)]
    if kept or given_splits:
        earlier = [(kept or {}).get(digest) for digest in manifest["sha256"]]
        anchors: dict[str, str] = {}  # a unit's split, from images that keep theirs, then from given ones
        for unit, before in zip(units, earlier):
            if before is not None:
                anchors.setdefault(unit, before)
        for unit, split, source_split in zip(units, splits, given):
            if source_split:
                anchors.setdefault(unit, split)
        splits = [before or (split if source_split else anchors.get(unit, split))
                  for unit, before, split, source_split in zip(units, earlier, splits, given)]
    # `order` is a per-image pseudo-random key: new images are stored in this order, a mix of classes in every shard
    order = [unit_interval(f"order/{digest}", seed) for digest in manifest["sha256"]]
    return manifest.assign(unit=units, split=splits, order=order)


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
    """Images per class in each split, for the split report (a multi-label image counts for each of its labels)."""
    exploded = table.assign(label=table["label"].map(label_sets.split)).explode("label")
    counts = exploded.groupby(["split", "label"]).size()
    present = set(counts.index.get_level_values(0))
    return {split: {label: int(count) for label, count in counts[split].items()} if split in present else {}
            for split in SPLITS}


def split_report(table: pd.DataFrame, seed: int, val_fraction: float, test_fraction: float,
                 group_by: GroupBy | None) -> dict[str, Any]:
    """Split sizes, shares and per-class counts, and how many units (kept-together groups) each split holds."""
    counts = split_counts(table)
    labels = label_sets.vocabulary(table["label"])
    total = len(table)
    sizes = {split: int((table["split"] == split).sum()) for split in SPLITS}
    unit_sizes = table.groupby("unit").size()
    return {
        "seed": seed,
        "requested": {"train": round(1 - val_fraction - test_fraction, 6), "val": val_fraction, "test": test_fraction},
        "group_by": None if group_by is None else str(group_by),
        "images": sizes,
        "shares": {split: round(sizes[split] / total, 4) if total else 0.0 for split in SPLITS},
        "units": {split: int(table.loc[table["split"] == split, "unit"].nunique()) for split in SPLITS},
        "largest_unit": int(unit_sizes.max()) if total else 0,
        "per_class": {label: {split: counts[split].get(label, 0) for split in SPLITS} for label in labels},
        "classes_missing": {split: [label for label in labels if counts[split].get(label, 0) == 0] for split in SPLITS},
    }
