"""What the manifest, quarantine list and ingest summary say about a data set, in figures; pure computation on tables."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)

INGEST_KEYS = ("files_seen", "images_used", "quarantined", "duplicates_dropped", "near_duplicate_groups",
               "non_image_files", "hidden_entries", "empty_class_folders", "root_files", "skipped_links",
               "unreadable_folders")  # what the report uses of ingest_summary.json


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the inputs say about the data set, computed once with pandas."""

    images_per_class: dict[str, int]  # largest class first
    images_per_format: dict[str, int]
    quarantined_by_reason: dict[str, int]
    images_used: int
    quarantined: int
    bad_fraction: float
    class_imbalance: float | None  # largest class / smallest class, in the given train split when there is one
    side_ranges: dict[str, tuple[int, int]]  # width and height: smallest, largest
    ingest_summary: dict[str, Any]
    # near-duplicate pairs whose members the source put in different splits: [path, split, path, split]
    leaks: list[list[str]] = dataclasses.field(default_factory=list)
    train_images_per_class: dict[str, int] = dataclasses.field(default_factory=dict)  # see train_class_counts


def _value_counts(column: pd.Series) -> dict[str, int]:
    return {str(key): int(count) for key, count in column.value_counts().items()}


def labels_of(manifest: pd.DataFrame) -> pd.Series:
    """One row per (image, label): a multi-label image ("a;b") counts for each of its labels; index: the image's."""
    labels = manifest["label"].astype(str)
    if not labels.str.contains(";", regex=False).any():  # single-label: splitting a million strings costs seconds
        return labels
    return labels.str.split(";").explode()


def leaks(manifest: pd.DataFrame) -> list[list[str]]:
    """Near-duplicate groups whose members come with different given splits, as pairs (first member and each other)."""
    if "split" not in manifest.columns:
        return []
    given = manifest[manifest["split"] != ""]
    spread = given.groupby("group")["split"].nunique()
    pairs = []
    for group in spread.index[spread > 1]:
        members = given[given["group"] == group].sort_values("path")
        first = members.iloc[0]
        pairs += [[first["path"], first["split"], row.path, row.split] for row in members.iloc[1:].itertuples()
                  if row.split != first["split"]]
    return pairs


def train_class_counts(manifest: pd.DataFrame) -> dict[str, int]:
    """Images per class that training will see: those of a given train split, else all (the hashed split is
    stratified, so its train split has the same proportions in expectation); largest first."""
    if "split" in manifest.columns and (manifest["split"] == "train").any():
        manifest = manifest[manifest["split"].isin(["train", ""])]
    return _value_counts(labels_of(manifest))


def repeated_content(manifest: pd.DataFrame) -> pd.DataFrame:
    """The rows whose sha256 another row has too (path, label, sha256), in manifest order; nulls never repeat."""
    sha256 = manifest["sha256"]
    return manifest.loc[sha256.notna() & sha256.duplicated(keep=False), ["path", "label", "sha256"]]


def compute_facts(manifest: pd.DataFrame, quarantine: pd.DataFrame, ingest_summary: dict[str, Any]) -> Facts:
    per_class = _value_counts(labels_of(manifest))
    train_counts = train_class_counts(manifest)
    images_used, quarantined = len(manifest), len(quarantine)
    for key, counted in (("images_used", images_used), ("quarantined", quarantined)):
        if ingest_summary.get(key, counted) != counted:
            logger.warning("ingest_summary.json says %s=%s, the files hold %d", key, ingest_summary[key], counted)
    return Facts(
        images_per_class=per_class,
        images_per_format=_value_counts(manifest["format"]),
        quarantined_by_reason=_value_counts(quarantine["reason"].replace("", "unknown")),
        images_used=images_used,
        quarantined=quarantined,
        bad_fraction=quarantined / (images_used + quarantined) if images_used + quarantined else 0.0,
        class_imbalance=max(train_counts.values()) / min(train_counts.values()) if train_counts else None,
        side_ranges={side: (int(manifest[side].min()), int(manifest[side].max()))
                     for side in ("width", "height") if manifest[side].notna().any()},
        ingest_summary={key: ingest_summary[key] for key in INGEST_KEYS if key in ingest_summary},
        leaks=leaks(manifest),
        train_images_per_class=train_counts,
    )
