"""Ingest stage: reads the source folder; writes data/raw/ (shards), data/interim/manifest.parquet, ingest_state.parquet,
ingest_summary.json and data/reports/quarantine.csv.

Incremental by design: the source is compared with the last run by path, size and modification time (a stat, no
read); only new or changed files are read, each once, and only content the raw store does not hold yet is added, to
new shards. When nothing changed, every output is left byte for byte as it was, so DVC skips every later stage.
A shard found missing or damaged (tasks/ingest/repair.py) is rebuilt: what it held is read again from the source.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks import manifest as manifest_file
from tasks import atomic, csv_cells, dvc_outputs, images, joins, label_table, pool, progress, raw_store
from tasks.config import load_config
from tasks.hashing import file_sha256
from tasks.ingest import layout, repair, state
from tasks.ingest.layout import SourceScan
from tasks.ingest.locations import Locations
from tasks.ingest.duplicates import resolve_duplicates
from tasks.ingest.examine import READ_REASONS, VERDICT_FIELDS, Examiner, FileJob, checks
from tasks.ingest.near_duplicates import group_near_duplicates
from tasks.params import IngestParams
from tasks.paths import Paths

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = manifest_file.COLUMNS
QUARANTINE_COLUMNS = ["source_path", "label", "sha256", "bytes", "reason", "detail"]
IMAGE_SUMMARY_KEYS = ("images_used", "quarantined", "quarantined_by_reason", "duplicates_dropped", "duplicates",
                      "near_duplicate_groups", "labels")


def outputs(paths: Paths) -> list[Path]:
    """What ingest writes (its outputs in dvc.yaml): what a run, or `imgpipe gc`, links back from DVC's cache."""
    return [paths.raw, paths.manifest, paths.ingest_state, paths.ingest_summary, paths.quarantine]


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


def _settings(params: IngestParams, scan: SourceScan, labels: Path | None) -> dict[str, Any]:
    """Every param and input that shapes the outputs beyond the files' own verdicts (a changed label table counts)."""
    return {"checks": checks(params.max_pixels, params.min_side, params.max_file_bytes), "on_label_conflict": params.on_label_conflict,
            "near_duplicate_distance": params.near_duplicate_distance, "layout": scan.layout,
            "labels_sha256": file_sha256(labels) if labels is not None else None,
            "follow_file_links": params.follow_file_links}


def _scanned(scan: SourceScan) -> pd.DataFrame:
    return pd.DataFrame({"source_path": [file.source_path for file in scan.files],
                         "label": [file.label for file in scan.files],
                         "split": [file.split for file in scan.files],
                         "subject": [file.subject for file in scan.files],
                         "link_target": [file.link_target for file in scan.files],
                         # where to read: a file system name, which may hold undecodable bytes (kept as objects)
                         "read_from": pd.Series([file.location for file in scan.files], dtype=object),
                         "size": pd.array([file.size for file in scan.files], dtype="int64"),
                         "mtime_ns": pd.array([file.mtime_ns for file in scan.files], dtype="int64")})


def _earlier_rows(files: pd.DataFrame, earlier: pd.DataFrame) -> np.ndarray:
    """For each file, its row in the last run's state, or -1 (a hash join in Arrow: no Python object per file)."""
    return joins.positions(files["source_path"], earlier.index)


def _reusable(files: pd.DataFrame, earlier: pd.DataFrame, rows: np.ndarray, settings: str,
              locations: Locations) -> pd.Series:
    """Whether the last run's verdict on each path still holds without reading the file: same size and mtime,
    same checks, not a read error, and (for a good image) its content still in the raw store."""
    if not len(earlier):
        return pd.Series(False, index=files.index)
    before = earlier.iloc[np.maximum(rows, 0)].reset_index(drop=True)
    reusable = ((before["checks"] == settings) & ~before["reason"].isin(READ_REASONS)
                & (before["size"] == files["size"].to_numpy()) & (before["mtime_ns"] == files["mtime_ns"].to_numpy())
                & (files["size"].to_numpy() >= 0)
                & ((before["reason"] != "") | _stored(before["sha256"], locations)))
    return pd.Series(reusable.fillna(False).astype(bool).to_numpy() & (rows >= 0), index=files.index)


def _stored(hashes: pd.Series, locations: Locations) -> pd.Series:
    """Whether the raw store holds each sha256 (a join in Arrow)."""
    return pd.Series(locations.contain(hashes), index=hashes.index, dtype=bool)


def _earlier_verdict(earlier: pd.DataFrame, row: int, settings: str) -> dict[str, Any] | None:
    """The last verdict on a path (its row in the last state, -1 for none), reused by examine when the file's bytes
    turn out the same (same checks only)."""
    if row < 0 or earlier["checks"].iat[row] != settings:
        return None
    return earlier.iloc[row][["sha256", *VERDICT_FIELDS]].to_dict()


def _examine_and_store(jobs: list[FileJob], params: IngestParams, raw: Path,
                       locations: Locations, root: str) -> pd.DataFrame:
    """Examine the files that need it (over all cores, or a Dask cluster) and add new content to new shards, in
    the order of the jobs, so the same source gives the same shards however it was spread."""
    records = []
    examiner = Examiner(params.max_pixels, params.min_side, params.max_file_bytes, root)
    with raw_store.ShardWriter(raw, params.shard_megabytes * 2**20) as writer, \
            progress.bar(len(jobs), "file", "ingest") as shown:
        for examined in pool.ordered_map(examiner, jobs, params.workers, params.scheduler):
            record = examined.record
            if examined.data is not None and record["sha256"] not in locations:
                extension = raw_store.extension_for(record["format"])
                locations[record["sha256"]] = writer.add(record["sha256"], extension, examined.data)
            records.append(record)
            shown.update()
    return pd.DataFrame(records, columns=["source_path", "sha256", "bytes", *VERDICT_FIELDS])


def _manifest(kept: pd.DataFrame, locations: Locations, distance: int) -> pd.DataFrame:
    """One row per image used, in path order: where the raw store holds it and its near-duplicate group."""
    kept = kept.reset_index(drop=True)
    leaders = group_near_duplicates(kept["phash"], distance)
    stored = locations.columns(kept["sha256"])
    manifest = kept.assign(path=kept["source_path"], group=kept["sha256"].take(leaders).to_numpy(),
                           shard=stored["shard"].to_numpy(), offset=stored["offset"].to_numpy())
    numbers = {"offset": "int64", "bytes": "int64", "width": "int64", "height": "int64", "orientation": "int64"}
    return manifest[MANIFEST_COLUMNS].astype({column: numbers.get(column, "str") for column in MANIFEST_COLUMNS})


def _summary(source: str, scan: SourceScan, files_seen: int, settings: dict[str, Any],
             images_found: dict[str, Any]) -> dict[str, Any]:
    """The ingest summary: what the scan found, and (in `images_found`) what became of the image files."""
    return {"source": source, "settings": settings, "layout": scan.layout, "files_seen": files_seen,
            "unlisted_files": len(scan.unlisted_files), **images_found,
            "non_image_files": len(scan.non_image_files), "empty_class_folders": scan.empty_class_folders,
            "root_files": scan.root_files, "skipped_links": scan.skipped_links,
            "unreadable_folders": scan.unreadable_folders, "hidden_entries": scan.hidden_entries}


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
    # partial: shards the cache lost are rebuilt below from the source, the others linked back
    dvc_outputs.restore(paths.root, "ingest", outputs(paths), partial=True)
    labels = paths.resolve(label_table.parse(params.labels)) if params.labels else None
    scan = layout.scan(source, params.layout, labels, params.follow_file_links)
    old_raw = _migrate_old_layout(paths.raw)
    raw_store.remove_temporary(paths.raw)
    locations, old_manifest = state.stored_locations(paths.manifest, paths.raw)
    damaged = repair.damaged_shards(paths.raw, locations, paths.manifest)
    forgotten = repair.forget(locations, damaged)
    if damaged:  # the damaged bytes are DVC's cache object too (a hard link): no restore may link them back
        present = [name for name in damaged if (paths.raw / name).exists()]
        dvc_outputs.discard(paths.root, "ingest", paths.raw, present)
    earlier = state.empty() if old_manifest or old_raw else state.load(paths.ingest_state)
    settings = _settings(params, scan, labels)
    files = _scanned(scan)
    scan.files = []  # the table holds what the run needs; a SourceFile per file is about 450 MB at 10^6 files
    rows = _earlier_rows(files, earlier)
    reusable = _reusable(files, earlier, rows, settings["checks"], locations)
    to_read = files[~reusable]
    logger.info("ingest: %d files under %s; %d unchanged since the last run, %d to read", len(files), source,
                int(reusable.sum()), len(to_read))

    summary_before = json.loads(paths.ingest_summary.read_text()) if paths.ingest_summary.is_file() else {}
    if (to_read.empty and len(earlier) == len(files) and paths.manifest.is_file() and not old_manifest
            and not damaged and summary_before.get("settings") == settings):
        # The same files as last time, none changed: the manifest stands; only what the scan says may differ.
        found = {key: summary_before[key] for key in IMAGE_SUMMARY_KEYS}
        summary = _summary(paths.shown(source), scan, len(files), settings, found)
        atomic.write_json(paths.ingest_summary, summary, keep_if_same=True)
        logger.info("ingest: nothing changed under %s (%d files); %.1f s", paths.shown(source), len(files),
                    time.perf_counter() - started)
        return manifest_file.read(paths.manifest)

    jobs = [FileJob(read_from, source_path, _earlier_verdict(earlier, row, settings["checks"]))
            for read_from, source_path, row in zip(to_read["read_from"], to_read["source_path"],
                                                   rows[~reusable.to_numpy()].tolist())]
    read_count = len(to_read)
    del to_read
    files = files.drop(columns="read_from")  # the file system names (a Python object each) were for the jobs only
    examined = _examine_and_store(jobs, params, paths.raw, locations, scan.root).set_index("source_path")
    verdict_columns = ["sha256", "bytes", *VERDICT_FIELDS]  # the last run's for the unchanged files, else examined
    kept_rows = reusable.to_numpy()
    verdicts = pd.concat([earlier.iloc[rows[kept_rows]][verdict_columns].set_axis(files.index[kept_rows]),
                          examined[verdict_columns].set_axis(files.index[~kept_rows])]).sort_index()
    records = pd.concat([files[["source_path", "label", "split", "subject", "link_target", "size", "mtime_ns"]],
                         verdicts], axis=1)
    del earlier, verdicts, examined  # at 10^6 files each is hundreds of MB; `records` holds what follows needs

    good = records[(records["reason"] == "") & _stored(records["sha256"], locations)]
    kept, conflicted, duplicates = resolve_duplicates(good, params.on_label_conflict)
    unusable = pd.DataFrame(scan.unusable_rows, columns=["source_path", "reason", "detail"]).assign(
        label="", sha256="", bytes=0)  # rows of a label table that name no file, or no label
    bad = pd.concat([records[records["reason"] != ""], conflicted, unusable]).sort_values("source_path", kind="stable")
    manifest = _manifest(kept, locations, params.near_duplicate_distance)
    quarantine = bad[QUARANTINE_COLUMNS].astype({"bytes": "int64"}).reset_index(drop=True)
    groups = manifest["group"].value_counts()
    found = {"images_used": len(manifest), "quarantined": len(bad),
             "quarantined_by_reason": {str(reason): int(count) for reason, count
                                       in sorted(bad["reason"].value_counts().items())},
             "duplicates_dropped": len(duplicates), "duplicates": duplicates,
             "near_duplicate_groups": int((groups > 1).sum()), "labels": sorted(manifest["label"].unique().tolist())}

    if damaged:
        used_before = manifest_file.read(paths.manifest).groupby("sha256")["path"].apply(list).to_dict()
        repair.report(paths.raw, damaged, forgotten, locations, used_before, set(files["source_path"]))
    # The shards are finished; what names them is written now, each file only if its content changed.
    manifest_file.write(paths.manifest, manifest, keep_if_same=True)
    atomic.write_csv(paths.quarantine, csv_cells.safe_table(quarantine), keep_if_same=True)  # paths, labels escaped
    atomic.write_json(paths.ingest_summary, _summary(paths.shown(source), scan, len(files), settings, found),
                      keep_if_same=True)
    state.write(paths.ingest_state, records.assign(checks=settings["checks"]))
    raw_store.remove(paths.raw, sorted(set(raw_store.shard_names(paths.raw)) - set(manifest["shard"])))
    if old_raw is not None:
        shutil.rmtree(old_raw, ignore_errors=True)
        (paths.interim / "ingest_cache.parquet").unlink(missing_ok=True)  # the old layout's verdict cache
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(found["quarantined_by_reason"].items()))
    logger.info(
        "ingest: %d files seen (%d read), %d images used in %d classes, %d quarantined%s, %d duplicates dropped, "
        "%d non-image files skipped; %d shard(s) in %s; %.1f s",
        len(files), read_count, len(manifest), len(found["labels"]), len(bad), f" ({reasons})" if reasons else "",
        len(duplicates), len(scan.non_image_files), len(raw_store.shard_names(paths.raw)), paths.shown(paths.raw),
        time.perf_counter() - started)
    return manifest


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, paths = load_config()
    run(config.ingest, paths)
