"""Finds the raw store's damaged shards: reads data/raw/ (a stat per shard; a full read only of a shard changed after
the manifest naming it was written) against the locations the manifest records.

A shard is damaged when it is missing, shorter than its images need (cut short: a full disk, a truncation), or, once
changed after the manifest naming it was written, when any of its images no longer matches its sha256. Ingest then
forgets what the shard held, so the images are read again from the source into new shards (`forget`), and says
which of them the source no longer has (`report`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tasks import raw_store
from tasks.ingest.locations import Locations

logger = logging.getLogger(__name__)


def damaged_shards(raw: Path, locations: Locations, manifest: Path) -> dict[str, str]:
    """Shard name -> what is wrong with it, for every shard holding one of `locations` (O(shards) stats)."""
    written_ns = manifest.stat().st_mtime_ns if manifest.is_file() else None
    damaged: dict[str, str] = {}
    verified_changed = False
    for shard, least in sorted(locations.ends().items()):
        try:
            found = os.stat(raw / shard)
        except FileNotFoundError:
            damaged[shard] = "missing"
            continue
        if found.st_size < least:
            damaged[shard] = f"{found.st_size} bytes, shorter than the {least} its images need (cut short)"
        elif written_ns is not None and found.st_mtime_ns > written_ns:
            # changed after its manifest was written (or copied by a checkout): its bytes decide
            problem = _verify(raw, locations.in_shard(shard))
            verified_changed = True
            if problem is not None:
                damaged[shard] = problem
    if verified_changed and not damaged:
        try:  # every changed shard checked out whole: mark them as checked, so the next run reads none of them again
            os.utime(manifest)
        except OSError:
            pass
    return damaged


def _verify(raw: Path, held: list[raw_store.Location]) -> str | None:
    """None when every image is where its location says with its sha256; else what is wrong."""
    with raw_store.Reader(raw) as reader:
        for location in sorted(held, key=lambda location: location.offset):
            try:
                reader.read(location)
            except raw_store.DamagedShard as error:
                return error.problem
    return None


def forget(locations: Locations, damaged: dict[str, str]) -> set[str]:
    """Remove the images of damaged shards from `locations` (so ingest reads them again); return their sha256s."""
    return locations.forget(damaged)


def report(raw: Path, damaged: dict[str, str], forgotten: set[str], locations: Locations,
           used_before: dict[str, list[str]], source_paths: set[str]) -> list[str]:
    """Log what was rebuilt, and name the images used before whose files the source no longer has (returned)."""
    for shard, problem in sorted(damaged.items()):
        logger.warning("%s: damaged (%s); the images it held are read again from the source into new shards",
                       raw / shard, problem)
    rebuilt = {sha256 for sha256 in forgotten if sha256 in locations}
    gone = sorted(path for sha256 in forgotten - rebuilt for path in used_before.get(sha256, [])
                  if path not in source_paths)
    logger.warning("ingest: %d image(s) of %d damaged shard(s) rebuilt from the source", len(rebuilt), len(damaged))
    if gone:
        shown = ", ".join(gone[:20]) + (f" and {len(gone) - 20} more" if len(gone) > 20 else "")
        logger.warning("ingest: %d image(s) used before cannot be rebuilt: their files are gone from the source, "
                       "so they are left out of the manifest: %s. Put the files back in the source (or check out a "
                       "version whose shards the DVC remote holds: dvc pull) to keep them", len(gone), shown)
    return gone
