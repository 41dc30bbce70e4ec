"""Compacts the raw store: reads the manifest and data/raw/, rewrites shards that mostly hold images no longer used.

Removing files from the source leaves their bytes in their shards (shards are never rewritten by ingest). Here the
images still used from shards that are mostly garbage (and more than MIN_RECLAIMED of it) are copied into new
shards, the manifest
is pointed at them, and the old shards are removed from the workspace: DVC's cache and remote keep every version
a commit still names, so nothing a tracked version needs is lost (`dvc gc` with --all-commits, run after this by
`imgpipe gc`, drops only what no commit names).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from tasks import dvc_outputs, raw_store
from tasks import manifest as manifest_file
from tasks.ingest import stage as ingest_stage
from tasks.params import IngestParams
from tasks.paths import Paths

logger = logging.getLogger(__name__)

MIN_RECLAIMED = 1 << 20  # bytes: rewriting a shard to reclaim less is not worth it


def run(params: IngestParams, paths: Paths, min_reclaimed: int = MIN_RECLAIMED) -> dict[str, Any]:
    """Compact the raw store in place; return what was done (shards and bytes before and after)."""
    # a run stopped after DVC removed ingest's outputs and before ingest linked them back leaves them missing
    dvc_outputs.restore(paths.root, "ingest", ingest_stage.outputs(paths))
    if not paths.manifest.is_file():
        raise ValueError(f"{paths.manifest}: not found; run the ingest stage first")
    manifest = manifest_file.read(paths.manifest)
    if "shard" not in manifest.columns:
        raise ValueError(f"{paths.manifest}: written before the raw store; run the ingest stage first")
    shards = raw_store.shard_names(paths.raw)
    sizes = {name: os.path.getsize(paths.raw / name) for name in shards}
    # what the used images occupy in their shard: a header block each, and their bytes padded to whole blocks
    occupied = manifest.assign(blocks=raw_store.BLOCK * (1 + (manifest["bytes"] + raw_store.BLOCK - 1)
                                                          // raw_store.BLOCK)).groupby("shard")["blocks"].sum()
    garbage = {name: sizes[name] - raw_store.END_OF_ARCHIVE - int(occupied[name]) for name in shards
               if name in occupied.index}
    sparse = [name for name, wasted in garbage.items() if wasted > occupied[name] and wasted > min_reclaimed]
    unused = [name for name in shards if name not in occupied.index]
    moving = manifest[manifest["shard"].isin(sparse)]
    moved: dict[str, raw_store.Location] = {}
    with raw_store.Reader(paths.raw) as reader, \
            raw_store.ShardWriter(paths.raw, params.shard_megabytes * 2**20) as writer:
        for row in moving.itertuples(index=False):
            if row.sha256 not in moved:
                data = reader.read(raw_store.location_of(row))
                moved[row.sha256] = writer.add(row.sha256, raw_store.extension_for(row.format), data)
    if moved:
        locations = manifest["sha256"].map(moved)
        manifest = manifest.assign(
            shard=locations.map(lambda location: location.shard, na_action="ignore").fillna(manifest["shard"]),
            offset=locations.map(lambda location: location.offset, na_action="ignore").fillna(manifest["offset"])
            .astype("int64"))
        manifest_file.write(paths.manifest, manifest)
    raw_store.remove(paths.raw, sparse + unused)
    after = raw_store.shard_names(paths.raw)
    summary = {"shards_before": len(shards), "shards_after": len(after), "bytes_before": sum(sizes.values()),
               "bytes_after": sum(os.path.getsize(paths.raw / name) for name in after),
               "compacted": len(sparse), "removed_unused": len(unused), "images_moved": len(moved)}
    logger.info("gc: %d shard(s) compacted, %d unused removed: %d shards, %.1f MB -> %d shards, %.1f MB",
                len(sparse), len(unused), len(shards), summary["bytes_before"] / 1e6, len(after),
                summary["bytes_after"] / 1e6)
    return summary
