"""Ingest stage: reads the source folder, writes data/raw/, data/interim/manifest.parquet and data/reports/quarantine.csv."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks import images
from tasks.decode_pool import available_cores
from tasks.near_duplicates import HASH_INPUT_SIDE, group_near_duplicates, perceptual_hash
from tasks.source_tree import SourceFile, scan_source

# Every worker process imports this module for examine(): pandas, pydantic and tqdm are imported where the main
# process uses them, not here, which saves each worker 0.3 s or more of start-up (a quarter of a small run).
if TYPE_CHECKING:
    import pandas as pd

    from tasks.config import IngestParams, Paths

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["path", "label", "sha256", "bytes", "width", "height", "format", "mode", "orientation",
                    "phash", "group", "source_path"]
QUARANTINE_COLUMNS = ["source_path", "label", "sha256", "bytes", "reason", "detail"]
_CACHE_COLUMNS = ["source_path", "settings", "size", "mtime_ns", "sha256", "width", "height", "format", "mode", "orientation",
                  "phash", "reason", "detail"]
# A cached verdict holds only for the same checks: bump the version when examine() changes.
_CACHE_VERSION = 2
_SERIAL_BELOW = 64  # files; starting worker processes costs more than it saves under this


class LabelConflictError(ValueError):
    """The same content under two labels, with ingest.on_label_conflict: fail."""


def _create(path: Path | None) -> Any:
    """A new file to write (making its folder when missing), or a null context for no path."""
    if path is None:
        return contextlib.nullcontext()
    try:
        return path.open("wb")
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("wb")


def _sha256(path: Path, copy_to: Path | None = None) -> str:
    """The file's sha256; with `copy_to`, the bytes read are written there too: the copy is exactly what was hashed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle, _create(copy_to) as copy:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            if copy is not None:
                copy.write(block)
    return digest.hexdigest()


def _settings(max_pixels: int, min_side: int) -> str:
    return f"v{_CACHE_VERSION} max_pixels={max_pixels} min_side={min_side}"


def examine(path: Path, source_path: str, cached: dict[str, Any] | None, max_pixels: int, min_side: int,
            copy_to: Path | None = None) -> dict[str, Any]:
    """Hash and (unless an earlier run's result for the same bytes is given) fully decode one file.

    With `copy_to`, a good image is also copied there, in the same pass that hashes it; workers copying in
    parallel keep data/raw/ from being written by one process alone.
    """
    record: dict[str, Any] = {"source_path": source_path, "settings": _settings(max_pixels, min_side),
                              "size": 0, "mtime_ns": 0, "sha256": "", "reason": "", "detail": ""}
    try:  # the file may have gone, or be unreadable, since the tree was scanned
        stat = path.stat()
        record |= {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        record["sha256"] = _sha256(path, copy_to)
    except OSError as error:
        record |= {"reason": "unreadable", "detail": f"cannot read file: {error.strerror or error}"}
    else:
        # The mtime is not compared: every file is hashed anyway, and a copy or checkout of the same bytes (new
        # mtimes) should not cost a full decode.
        if cached is not None and (cached["size"], cached["sha256"]) == (stat.st_size, record["sha256"]):
            record = cached | {"mtime_ns": stat.st_mtime_ns}
        else:
            try:
                info, rgb = images.inspect(path, max_pixels, min_side, draft_size=HASH_INPUT_SIDE)
                record |= {"width": info.width, "height": info.height, "format": info.format, "mode": info.mode,
                           "orientation": info.orientation, "phash": perceptual_hash(rgb)}
            except images.ImageError as error:
                record |= {"reason": error.reason, "detail": error.detail}
    if copy_to is not None and record["reason"]:
        copy_to.unlink(missing_ok=True)
    return record


def _examine_job(job: tuple[str, str, dict[str, Any] | None, int, int, str | None]) -> dict[str, Any]:
    path, source_path, cached, max_pixels, min_side, copy_to = job
    return examine(Path(path), source_path, cached, max_pixels, min_side, Path(copy_to) if copy_to else None)


def _load_cache(path: Path) -> dict[str, dict[str, Any]]:
    import pandas as pd

    if not path.exists():
        return {}
    try:
        table = pd.read_parquet(path)
    except Exception as error:  # a damaged cache only costs a full decode
        logger.warning("%s: ignoring unreadable ingest cache (%s)", path, error)
        return {}
    return {row["source_path"]: row for row in table.to_dict("records")}


def examine_all(files: list[SourceFile], params: IngestParams, cache: dict[str, dict[str, Any]],
                copy_root: Path | None = None) -> list[dict[str, Any]]:
    """Examine every file, in parallel over all cores; an earlier verdict is reused for the same path, settings,
    size and sha256."""
    from tqdm import tqdm

    jobs = []
    settings = _settings(params.max_pixels, params.min_side)
    for file in files:
        cached = cache.get(file.source_path)
        cached = cached if cached is not None and cached["settings"] == settings else None
        copy_to = str(copy_root / file.source_path) if copy_root is not None else None
        jobs.append((str(file.path), file.source_path, cached, params.max_pixels, params.min_side, copy_to))
    reused = sum(job[2] is not None for job in jobs)
    logger.info("examining %d files (%d have an earlier verdict, reused if their sha256 matches)", len(jobs), reused)
    workers = params.workers or available_cores()
    progress = dict(total=len(jobs), unit="file", desc="ingest", disable=None)
    if workers == 1 or len(jobs) < _SERIAL_BELOW:
        return [_examine_job(job) for job in tqdm(jobs, **progress)]
    # spawn, not fork: the caller may hold threads (TensorFlow, Prefect) that a forked child would inherit locked
    context = multiprocessing.get_context("spawn")
    chunk_size = max(1, min(64, len(jobs) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(tqdm(pool.map(_examine_job, jobs, chunksize=chunk_size), **progress))


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
    import pandas as pd

    from tasks import atomic

    source = paths.resolve(params.source)
    scan = scan_source(source)
    files = {file.source_path: file for file in scan.files}
    cache = _load_cache(paths.ingest_cache)
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
    atomic.write_parquet(paths.ingest_cache, pd.DataFrame(records, columns=_CACHE_COLUMNS))
    logger.info(
        "ingest: %d files seen, %d images used in %d classes, %d quarantined %s, %d duplicates dropped, "
        "%d non-image files skipped",
        len(records), len(kept), len(summary["labels"]), len(bad), summary["quarantined_by_reason"],
        len(duplicates), len(scan.non_image_files),
    )
    return manifest


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from tasks.config import load_config

    config, paths = load_config()
    run(config.ingest, paths)


if __name__ == "__main__":
    main()
