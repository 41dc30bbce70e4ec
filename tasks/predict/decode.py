"""Hashes and decodes batches of image files for prediction; reads the files, writes nothing.

Run in worker processes (tasks/pool.py), so kept free of TensorFlow imports. Unlike preprocessing's decode, a file
that cannot be read or decoded becomes an error result, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks import images
from tasks.hashing import file_sha256


@dataclass(frozen=True)
class FileJob:
    file: str  # where to read it
    decode: bool  # False for a file whose extension is not an image format's: it is only described
    expected_sha256: str  # an earlier result for these bytes exists: hash only, and decode only if the hash differs


@dataclass(frozen=True)
class DecodeSettings:
    image_size: int
    resize: str
    max_pixels: int


@dataclass(frozen=True)
class FileResult:
    status: str  # "ok", "reused" (hash equal to expected_sha256, not decoded) or "error"
    reason: str
    detail: str
    sha256: str
    bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class BatchResult:
    files: list[FileResult]
    pixels: np.ndarray  # uint8, one image per "ok" result, in order


def read_file(job: FileJob, settings: DecodeSettings) -> tuple[FileResult, np.ndarray | None]:
    """Describe, hash and decode one file (see images.load_rgb_array); any failure is returned, not raised."""
    path = Path(job.file)
    try:
        stat = path.stat()
        sha256 = file_sha256(path) if job.decode else ""
    except OSError as error:
        return FileResult("error", "unreadable", f"cannot read file: {error.strerror or error}", "", 0, 0), None
    described = dict(sha256=sha256, bytes=stat.st_size, mtime_ns=stat.st_mtime_ns)
    if not job.decode:
        detail = f"{path.suffix or 'no extension'} is not one of {', '.join(sorted(images.IMAGE_EXTENSIONS))}"
        return FileResult("error", "unsupported_format", detail, **described), None
    if job.expected_sha256 and job.expected_sha256 == sha256:
        return FileResult("reused", "", "", **described), None
    try:
        pixels = images.load_rgb_array(path, settings.image_size, settings.resize,  # type: ignore[arg-type]
                                       settings.max_pixels)
    except images.ImageError as error:
        detail = images.advice(error, {"too_many_pixels": "raise max_pixels"})
        return FileResult("error", error.reason, detail, **described), None
    except Exception as error:  # anything else Pillow may raise on a hostile file must not stop the run
        detail = f"cannot decode image: {type(error).__name__}: {error}"
        return FileResult("error", "corrupt", detail, **described), None
    return FileResult("ok", "", "", **described), pixels


def read_batch(jobs: list[FileJob], settings: DecodeSettings) -> BatchResult:
    """read_file for each job; the decoded images stacked into one array (one transfer from a worker)."""
    results, decoded = [], []
    for job in jobs:
        result, pixels = read_file(job, settings)
        results.append(result)
        if pixels is not None:
            decoded.append(pixels)
    size = settings.image_size
    stacked = np.stack(decoded) if decoded else np.zeros((0, size, size, 3), dtype=np.uint8)
    return BatchResult(results, stacked)
