"""The embeddings store format: writes and reads data/embeddings/, a pretrained backbone's pooled features of every
image (float16, one row per image content), and embeddings.json, what they were computed under.

Features depend on the image's content (its sha256) and on the settings: the backbone and its weights, the image
size, the resize mode and the decoder version. The store holds the features of one settings at a time; a shard
(`features-NNNNNN.parquet`: sha256, features) is written once under a temporary name and never rewritten, so a run
after new images adds one shard for them alone. Shards whose images were mostly removed are compacted (their live
rows copied). Splits and labels are not stored here: relabelling or re-splitting never recomputes a feature.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks import atomic, images

SHARD_PATTERN = re.compile(r"features-(?P<serial>\d{6})\.parquet")
SUMMARY_FILE = "embeddings.json"
STORED_DTYPE = np.dtype("<f2")  # 2 bytes per feature: 2.5 KiB per image for 1280 features


def settings(weights_id: str, image_size: int, resize: str) -> dict[str, Any]:
    """What a stored feature depends on besides the image's bytes."""
    return {"weights": weights_id, "image_size": int(image_size), "resize": resize,
            "decoder": images.DECODE_VERSION}


def shard_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(entry.name for entry in os.scandir(folder) if SHARD_PATTERN.fullmatch(entry.name))


def read_summary(folder: Path) -> dict[str, Any]:
    """embeddings.json, or {} when the folder has none (or an unreadable one: everything is then computed again)."""
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def write_summary(folder: Path, summary: dict[str, Any]) -> None:
    atomic.write_json(folder / SUMMARY_FILE, summary, keep_if_same=True)


def remove_temporary(folder: Path) -> None:
    """Delete shards a killed run left unfinished."""
    if folder.is_dir():
        for entry in os.scandir(folder):
            if entry.name.startswith(".features-") and entry.name.endswith(".partial"):
                os.unlink(entry.path)


def remove(folder: Path, names: Iterable[str]) -> None:
    for name in names:
        if not SHARD_PATTERN.fullmatch(name):
            raise ValueError(f"{name}: not a features shard; refusing to delete it")
        (folder / name).unlink(missing_ok=True)


def stored_sha256s(folder: Path) -> dict[str, str]:
    """sha256 -> the shard holding its features, for every shard in the folder (the sha256 column alone is read)."""
    stored: dict[str, str] = {}
    for name in shard_names(folder):
        for digest in pq.read_table(folder / name, columns=["sha256"]).column("sha256").to_pylist():
            stored.setdefault(digest, name)
    return stored


def write_shard(folder: Path, sha256s: list[str], features: np.ndarray) -> str:
    """A new shard holding these images' features; returns its name."""
    if len(sha256s) != len(features):
        raise ValueError(f"{len(sha256s)} images for {len(features)} feature rows")
    serials = [int(SHARD_PATTERN.fullmatch(name)["serial"]) for name in shard_names(folder)]
    name = f"features-{max(serials, default=0) + 1:06d}.parquet"
    values = np.ascontiguousarray(features, dtype=STORED_DTYPE)
    width = values.shape[1] * STORED_DTYPE.itemsize
    column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, pa.py_buffer(values)])
    table = pa.table({"sha256": pa.array(sha256s, pa.string()), "features": column})
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{name}.partial"
    try:
        pq.write_table(table, temporary, compression="none")  # float16 noise does not compress
        os.replace(temporary, folder / name)
    finally:
        temporary.unlink(missing_ok=True)
    return name


def _shard_features(folder: Path, name: str, wanted: set[str] | None = None) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(folder / name)
    digests = table.column("sha256").to_pylist()
    column = table.column("features").combine_chunks()
    width = column.type.byte_width // STORED_DTYPE.itemsize
    values = np.frombuffer(column.buffers()[1], dtype=STORED_DTYPE, count=len(digests) * width,
                           offset=column.offset * column.type.byte_width).reshape(len(digests), width)
    if wanted is not None:
        keep = [index for index, digest in enumerate(digests) if digest in wanted]
        return [digests[index] for index in keep], values[keep]
    return digests, values


def read_features(folder: Path, sha256s: list[str]) -> np.ndarray:
    """The features (float32) of these images, in the order given; a ValueError names an image the store lacks."""
    wanted = set(sha256s)
    found: dict[str, np.ndarray] = {}
    for name in shard_names(folder):
        digests, values = _shard_features(folder, name, wanted - set(found))
        found.update(zip(digests, values))
    missing = [digest for digest in sha256s if digest not in found]
    if missing:
        raise ValueError(f"{folder}: no features for {len(missing)} of {len(sha256s)} images (e.g. sha256 "
                         f"{missing[0][:12]}...); run the embed stage (dvc repro embed)")
    if not sha256s:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([found[digest] for digest in sha256s]).astype(np.float32)


def compact(folder: Path, live: set[str], records: dict[str, int], below: float = 0.5) -> dict[str, int]:
    """Rewrite the shards whose live share of rows fell under `below` (live rows copied); returns the record count
    of every shard left."""
    stored = stored_sha256s(folder)
    live_per_shard = pd.Series([stored[digest] for digest in live if digest in stored], dtype=object).value_counts()
    rows = {name: records.get(name) or pq.read_metadata(folder / name).num_rows for name in shard_names(folder)}
    sparse = [name for name, count in rows.items() if live_per_shard.get(name, 0) < below * count]
    if not sparse:
        return rows
    kept_digests: list[str] = []
    kept_values: list[np.ndarray] = []
    for name in sparse:
        digests, values = _shard_features(folder, name, live)
        kept_digests += digests
        kept_values.append(values)
    counts = {name: count for name, count in rows.items() if name not in sparse}
    if kept_digests:
        written = write_shard(folder, kept_digests, np.concatenate(kept_values))
        counts[written] = len(kept_digests)
    remove(folder, sparse)
    return counts
