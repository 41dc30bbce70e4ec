"""Decodes images held in the raw store exactly as training sees them; reads data/raw/ and the manifest.

The decoder runs in worker processes (tasks/pool.py), so this module stays free of TensorFlow and pandas.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tasks import images, raw_store

Job = tuple[str, raw_store.Location]  # an image's path (for messages) and where the raw store holds it


class Decoder:
    """A picklable callable: (path, location) of a stored image -> its pixels at one size and resize policy."""

    def __init__(self, raw: Path, image_size: int, resize_mode: str, max_pixels: int) -> None:
        self.raw = raw
        self.image_size = image_size
        self.resize_mode = resize_mode
        self.max_pixels = max_pixels

    def __call__(self, job: Job) -> np.ndarray:
        name, location = job
        try:
            data = raw_store.read(self.raw, location)  # checked against its sha256
        except raw_store.DamagedShard as error:
            raise raw_store.DamagedShard(error.folder, error.shard, f"{error.problem} (image {name})") from None
        return images.decode_array(data, name, self.image_size, self.resize_mode,  # type: ignore[arg-type]
                                   self.max_pixels)


def pictures(raw: Path, manifest: Path, names: list[str], side: int, max_pixels: int,
             on_error: Callable[[str, Exception], None]) -> list[np.ndarray | None]:
    """Pictures of images by manifest path, padded to `side` px (the originals, for a gallery); None, after
    `on_error(path, error)`, for one that cannot be decoded."""
    decoder = Decoder(raw, side, "pad", max_pixels)
    found: list[np.ndarray | None] = []
    for job in jobs_for(manifest, names):
        try:
            found.append(decoder(job))
        except (images.ImageError, OSError) as error:
            on_error(job[0], error)
            found.append(None)
    return found


def jobs_for(manifest: Path, names: list[str]) -> list[Job]:
    """The decode jobs of the images of these manifest paths, in the order given."""
    import pandas as pd

    table = pd.read_parquet(manifest, columns=["path", "sha256", "shard", "offset", "bytes"]).set_index("path")
    missing = [name for name in names if name not in table.index]
    if missing:
        raise ValueError(f"{manifest}: no image {missing[0]!r} (and {len(missing) - 1} more); the manifest and the "
                         "reports disagree: run the pipeline again (dvc repro)")
    rows = table.loc[names]
    return [(name, raw_store.Location(shard, int(offset), int(size), sha256))
            for name, shard, offset, size, sha256 in zip(names, rows["shard"], rows["offset"], rows["bytes"],
                                                          rows["sha256"])]
