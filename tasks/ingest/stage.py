"""Ingest stage: reads the source folder, writes data/raw/, data/interim/manifest.parquet and data/reports/quarantine.csv."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from typing import Any

import pandas as pd

from tasks import atomic
from tasks.config import load_config
from tasks.ingest.examine import CACHE_COLUMNS, examine_all, load_cache
from tasks.ingest.near_duplicates import group_near_duplicates
from tasks.params import IngestParams
from tasks.paths import Paths
from tasks.source_tree import scan_source

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["path", "label", "sha256", "bytes", "width", "height", "format", "mode", "orientation",
                    "phash", "group", "source_path"]
QUARANTINE_COLUMNS = ["source_path", "label", "sha256", "bytes", "reason", "detail"]


class LabelConflictError(ValueError):
    """The same content under two labels, with ingest.on_label_conflict: fail."""


def _resolve_duplicates(
    good: list[dict[str, Any]], on_label_conflict: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[list[str]]]:
    """Keep one copy of content repeated inside a class; set aside content found under two labels."""
    labels_by_hash: dict[str, set[str]] = defaultdict(set)
    for record in good:
        labels_by_hash[record["sha256"]].add(record["label"])
    conflicts = {digest: labels for digest, labels in labels_by_hash.items() if len(labels) > 1}
    if conflicts and on_label_conflict == "fail":
        examples = [sorted(r["source_path"] for r in good if r["sha256"] == digest) for digest in list(conflicts)[:5]]
        raise LabelConflictError(
            f"{len(conflicts)} image(s) appear under two or more labels, e.g. {examples}; remove the wrong copies "
            "or set ingest.on_label_conflict: quarantine"
        )
    kept, conflicted, duplicates = [], [], []
    first_by_key: dict[tuple[str, str], str] = {}
    for record in good:
        if record["sha256"] in conflicts:
            others = ", ".join(sorted(conflicts[record["sha256"]] - {record["label"]}))
            conflicted.append(record | {"reason": "label_conflict", "detail": f"same content also under label(s) {others}"})
            continue
        key = (record["label"], record["sha256"])
        if key in first_by_key:
            duplicates.append([first_by_key[key], record["source_path"]])
            continue
        first_by_key[key] = record["source_path"]
        kept.append(record)
    return kept, conflicted, duplicates


def run(params: IngestParams, paths: Paths) -> pd.DataFrame:
    """Scan the source, examine every file, copy the good ones into data/raw/ and write the manifest and reports."""
    source = paths.resolve(params.source)
    scan = scan_source(source)
    files = {file.source_path: file for file in scan.files}
    cache = load_cache(paths.ingest_cache)
    # data/raw/ is rebuilt beside the old one and replaces it only once complete; its path for a file is the
    # file's path in the source (label folder and any sub-folders below it)
    with atomic.atomic_directory(paths.raw) as building:
        records = examine_all(scan.files, params, cache, copy_root=building)
        for record in records:
            record["label"] = files[record["source_path"]].label
        good = [record for record in records if not record["reason"]]
        bad = [record for record in records if record["reason"]]
        kept, conflicted, duplicates = _resolve_duplicates(good, params.on_label_conflict)
        for dropped in [record["source_path"] for record in conflicted] + [pair[1] for pair in duplicates]:
            (building / dropped).unlink()
    bad = sorted(bad + conflicted, key=lambda record: record["source_path"])

    for record in kept:
        record["path"] = record["source_path"]
        record["bytes"] = record["size"]
    kept.sort(key=lambda record: record["path"])
    group_leaders = group_near_duplicates([record["phash"] for record in kept], params.near_duplicate_distance)
    for record, leader in zip(kept, group_leaders):
        record["group"] = kept[leader]["sha256"]
    manifest = pd.DataFrame(kept, columns=MANIFEST_COLUMNS).astype(
        {"bytes": "int64", "width": "int64", "height": "int64", "orientation": "int64"}
    )
    quarantine = pd.DataFrame([record | {"bytes": record["size"]} for record in bad], columns=QUARANTINE_COLUMNS)
    group_sizes = Counter(group_leaders)
    summary = {
        "source": str(source),
        "files_seen": len(records),
        "images_used": len(kept),
        "quarantined": len(bad),
        "quarantined_by_reason": dict(sorted(Counter(record["reason"] for record in bad).items())),
        "duplicates_dropped": len(duplicates),
        "duplicates": duplicates,
        "near_duplicate_groups": sum(1 for size in group_sizes.values() if size > 1),
        "non_image_files": len(scan.non_image_files),
        "empty_class_folders": scan.empty_class_folders,
        "root_files": scan.root_files,
        "skipped_links": scan.skipped_links,
        "unreadable_folders": scan.unreadable_folders,
        "hidden_entries": scan.hidden_entries,
        "labels": sorted(manifest["label"].unique().tolist()),
    }
    atomic.write_parquet(paths.manifest, manifest)
    atomic.write_csv(paths.quarantine, quarantine)
    atomic.write_json(paths.interim / "ingest_summary.json", summary)
    atomic.write_parquet(paths.ingest_cache, pd.DataFrame(records, columns=CACHE_COLUMNS))
    logger.info(
        "ingest: %d files seen, %d images used in %d classes, %d quarantined %s, %d duplicates dropped, "
        "%d non-image files skipped",
        len(records), len(kept), len(summary["labels"]), len(bad), summary["quarantined_by_reason"],
        len(duplicates), len(scan.non_image_files),
    )
    return manifest


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, paths = load_config()
    run(config.ingest, paths)
