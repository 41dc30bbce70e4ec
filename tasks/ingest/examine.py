"""Examines one source file (hash, full decode check, perceptual hash) and many over all cores; reads the files and
writes only the copy of a good image into data/raw/.

Worker processes import this module: pandas, pydantic and tqdm are imported where the main process uses them, not
here, which saves each worker 0.3 s or more of start-up (a quarter of a small run).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks import images, pool
from tasks.hashing import file_sha256
from tasks.ingest.near_duplicates import HASH_INPUT_SIDE, perceptual_hash

if TYPE_CHECKING:
    from tasks.params import IngestParams
    from tasks.source_tree import SourceFile

logger = logging.getLogger(__name__)

CACHE_COLUMNS = ["source_path", "settings", "size", "mtime_ns", "sha256", "width", "height", "format", "mode",
                 "orientation", "phash", "reason", "detail"]
# A cached verdict holds only for the same checks: bump the version when examine() changes.
_CACHE_VERSION = 2
# What a quarantine reason asks the user to change.
_ADVICE = {"too_many_pixels": "raise ingest.max_pixels", "too_small": "lower ingest.min_side"}


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
        record["sha256"] = file_sha256(path, copy_to)
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
                record |= {"reason": error.reason, "detail": images.advice(error, _ADVICE)}
    if copy_to is not None and record["reason"]:
        copy_to.unlink(missing_ok=True)
    return record


def _examine_job(job: tuple[str, str, dict[str, Any] | None, int, int, str | None]) -> dict[str, Any]:
    path, source_path, cached, max_pixels, min_side, copy_to = job
    return examine(Path(path), source_path, cached, max_pixels, min_side, Path(copy_to) if copy_to else None)


def load_cache(path: Path) -> dict[str, dict[str, Any]]:
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
    with tqdm(total=len(jobs), unit="file", desc="ingest", disable=None) as progress:
        records = []
        for record in pool.ordered_map(_examine_job, jobs, params.workers):
            records.append(record)
            progress.update()
    return records
