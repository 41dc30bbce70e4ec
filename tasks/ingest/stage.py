"""Ingest stage: reads the source folder; writes data/raw/ (shards), data/interim/manifest.parquet, ingest_state.parquet,
ingest_summary.json and data/reports/quarantine.csv.

Incremental by design: the source is compared with the last run by path, size and modification time (a stat, no
read); only new or changed files are read, each once, and only content the raw store does not hold yet is added, to
new shards. When nothing changed, every output is left byte for byte as it was, so DVC skips every later stage.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from tasks import atomic, images, pool, raw_store
from tasks.config import load_config
from tasks.ingest import state
from tasks.ingest.duplicates import resolve_duplicates
from tasks.ingest.examine import READ_REASONS, VERDICT_FIELDS, Examiner, FileJob, checks
from tasks.ingest.near_duplicates import group_near_duplicates
from tasks.params import IngestParams
from tasks.paths import Paths
from tasks.source_tree import SourceFile, SourceScan, scan_source

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["path", "label", "sha256", "shard", "offset", "bytes", "width", "height", "format", "mode",
                    "orientation", "phash", "group", "source_path"]
QUARANTINE_COLUMNS = ["source_path", "label", "sha256", "bytes", "reason", "detail"]


def _reusable(file: SourceFile, previous: dict[str, Any] | None, settings: str,
              locations: dict[str, raw_store.Location]) -> bool:
    """Whether the last run's verdict on this path still holds without reading the file: same size and mtime, same
    checks, not a read error, and (for a good image) its content still in the raw store."""
    return (previous is not None and previous["checks"] == settings and previous["reason"] not in READ_REASONS
            and (previous["size"], previous["mtime_ns"]) == (file.size, file.mtime_ns) and file.size >= 0
            and (bool(previous["reason"]) or previous["sha256"] in locations))


def _migrate_old_layout(raw: Path) -> Path | None:
    """Move a data/raw/ of loose files (written before the raw store) aside; return where, to delete it at the end."""
    if not raw.is_dir() or not any(not raw_store.SHARD_PATTERN.fullmatch(name) and not name.startswith(".")
                                   for name in os.listdir(raw)):
        return None
    aside = raw.with_name(f".{raw.name}.loose-files.old")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(raw, aside)
    logger.info("%s held loose files (the layout before the raw store): moved aside; the images are read again "
                "from the source into shards, and the old files are deleted at the end", raw)
    return aside


def _examine_and_store(jobs: list[FileJob], params: IngestParams, raw: Path,
                       locations: dict[str, raw_store.Location]) -> list[dict[str, Any]]:
    """Examine the files that need it (over all cores, or a Dask cluster) and add new content to new shards, in
    the order of the jobs, so the same source gives the same shards however it was spread."""
    records = []
    examiner = Examiner(params.max_pixels, params.min_side)
    with raw_store.ShardWriter(raw, params.shard_megabytes * 2**20) as writer, \
            tqdm(total=len(jobs), unit="file", desc="ingest", disable=None) as progress:
        for examined in pool.ordered_map(examiner, jobs, params.workers, params.scheduler):
            record = examined.record
            if examined.data is not None and record["sha256"] not in locations:
                extension = raw_store.extension_for(record["format"])
                locations[record["sha256"]] = writer.add(record["sha256"], extension, examined.data)
            records.append(record)
            progress.update()
    return records


def _summary(source: Path, scan: SourceScan, kept: list[dict[str, Any]], bad: list[dict[str, Any]],
             duplicates: list[list[str]], group_leaders: list[int]) -> dict[str, Any]:
    group_sizes = Counter(group_leaders)
    return {
        "source": str(source),
        "files_seen": len(scan.files),
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
        "labels": sorted({record["label"] for record in kept}),
    }


def run(params: IngestParams, paths: Paths) -> pd.DataFrame:
    """Scan the source, read what is new or changed, store new content in shards, write the manifest and reports.

    An error of the machine (disk full, I/O error, out of file handles) stops the run with its cause; what the last
    run wrote stays usable, and the files being read are not quarantined for it.
    """
    try:
        return _ingest(params, paths)
    except OSError as error:
        if error.errno not in images.MACHINE_ERRORS:
            raise
        where = f" ({error.filename})" if error.filename else ""
        raise OSError(error.errno, f"ingest stopped: {error.strerror}{where}; nothing was changed: the last manifest "
                                   "and the shards it names are as they were. Free some space (or mend the disk, or "
                                   "raise the open-files limit) and run again") from error


def _ingest(params: IngestParams, paths: Paths) -> pd.DataFrame:
    started = time.perf_counter()
    source = paths.resolve(params.source)
    paths.check_source(source, "ingest.source")
    scan = scan_source(source)
    old_raw = _migrate_old_layout(paths.raw)
    raw_store.remove_temporary(paths.raw)
    locations, old_manifest = state.stored_locations(paths.manifest, paths.raw)
    previous = {} if old_manifest or old_raw else state.load(paths.ingest_state)
    settings = checks(params.max_pixels, params.min_side)

    reused, jobs = {}, []
    for file in scan.files:
        earlier = previous.get(file.source_path)
        if _reusable(file, earlier, settings, locations):
            reused[file.source_path] = earlier
        else:
            jobs.append(FileJob(str(file.path), file.source_path, earlier if earlier and earlier["checks"] == settings
                                else None))
    logger.info("ingest: %d files under %s; %d unchanged since the last run, %d to read", len(scan.files), source,
                len(reused), len(jobs))
    examined = {record["source_path"]: record for record in
                _examine_and_store(jobs, params, paths.raw, locations)}

    records, state_rows = [], []
    for file in scan.files:
        record = reused.get(file.source_path) or examined[file.source_path]
        state_rows.append({**record, "checks": settings, "size": file.size, "mtime_ns": file.mtime_ns})
        records.append({**{name: record[name] for name in ("sha256", "bytes", *VERDICT_FIELDS)},
                        "source_path": file.source_path, "label": file.label})
    good = [record for record in records if not record["reason"] and record["sha256"] in locations]
    bad = [record for record in records if record["reason"]]
    kept, conflicted, duplicates = resolve_duplicates(good, params.on_label_conflict)
    bad = sorted(bad + conflicted, key=lambda record: record["source_path"])
    kept.sort(key=lambda record: record["source_path"])
    group_leaders = group_near_duplicates([record["phash"] for record in kept], params.near_duplicate_distance)
    for record, leader in zip(kept, group_leaders):
        location = locations[record["sha256"]]
        record |= {"path": record["source_path"], "group": kept[leader]["sha256"], "shard": location.shard,
                   "offset": location.offset}
    manifest = pd.DataFrame(kept, columns=MANIFEST_COLUMNS).astype(
        {"offset": "int64", "bytes": "int64", "width": "int64", "height": "int64", "orientation": "int64"})
    quarantine = pd.DataFrame(bad, columns=QUARANTINE_COLUMNS).astype({"bytes": "int64"})
    summary = _summary(source, scan, kept, bad, duplicates, group_leaders)

    # The shards are finished; what names them is written now, each file only if its content changed.
    atomic.write_parquet(paths.manifest, manifest, keep_if_same=True)
    atomic.write_csv(paths.quarantine, quarantine, keep_if_same=True)
    atomic.write_json(paths.ingest_summary, summary, keep_if_same=True)
    state.write(paths.ingest_state, state_rows)
    unused = sorted(set(raw_store.shard_names(paths.raw)) - set(manifest["shard"]))
    raw_store.remove(paths.raw, unused)  # only shards holding nothing the manifest uses
    if old_raw is not None:
        shutil.rmtree(old_raw, ignore_errors=True)
        (paths.interim / "ingest_cache.parquet").unlink(missing_ok=True)  # the old layout's verdict cache
    logger.info(
        "ingest: %d files seen (%d read), %d images used in %d classes, %d quarantined %s, %d duplicates dropped, "
        "%d non-image files skipped; %d shard(s) in %s; %.1f s",
        len(records), len(jobs), len(kept), len(summary["labels"]), len(bad), summary["quarantined_by_reason"],
        len(duplicates), len(scan.non_image_files), len(raw_store.shard_names(paths.raw)), paths.raw,
        time.perf_counter() - started)
    return manifest


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, paths = load_config()
    run(config.ingest, paths)
