"""Hashes and decodes batches of image files for prediction; reads the files, writes nothing.

Run in worker processes (tasks/pool.py), so kept free of TensorFlow imports. Each file is read once, with
images.read_file, through folders opened without following links (tasks/safe_open.py): the bytes hashed are
the bytes decoded, a file or folder swapped for a link or a FIFO after the walk is refused, never followed or
waited on, and a file over the size limit is refused before it is read. A file's own trouble becomes an error
result, never an exception; the machine's trouble (disk full, I/O error, out of file handles) raises OSError
naming the file, for the run to stop on.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks import images, safe_open


@dataclass(frozen=True)
class FileJob:
    file: bytes  # what to read: its path relative to the root (for a link inside the tree, its target's)
    decode: bool  # False for a file whose extension is not an image format's: it is only described
    expected_sha256: str  # an earlier result for these bytes exists: hash only, and decode only if the hash differs
    skipped: str = ""  # the walk's reason not to read it (hidden, link, ...): nothing is read


@dataclass(frozen=True)
class DecodeSettings:
    root: str  # the folder classified
    image_size: int
    resize: str
    max_pixels: int
    max_file_bytes: int = images.MAX_FILE_BYTES  # larger files get an error row (too_large) and are not read


@dataclass(frozen=True)
class FileResult:
    status: str  # "ok", "reused" (hash equal to expected_sha256, not decoded), "error" or "skipped"
    reason: str
    detail: str
    sha256: str
    bytes: int | None  # None where nothing was read or described (a skipped entry, a link)
    mtime_ns: int | None


@dataclass(frozen=True)
class BatchResult:
    files: list[FileResult]
    pixels: np.ndarray  # uint8, one image per "ok" result, in order


def _before_read(path: Path) -> None:
    """Called just before each file is opened; a test widens the race window between the walk and the read here."""


before_read: Callable[[Path], None] = _before_read


def _machine_error(error: OSError, path: Path) -> OSError:
    return OSError(error.errno, error.strerror, str(path))


def read_file(job: FileJob, settings: DecodeSettings,
              tree: safe_open.Folders) -> tuple[FileResult, np.ndarray | None]:
    """Describe, hash and decode one file (images.decode_array of the bytes read); a file's failure is returned."""
    if job.skipped:
        return FileResult("skipped", job.skipped, "", "", None, None), None
    followed = job.file.startswith(b"/")  # a link followed out of the folder (follow_file_links): read its target
    if followed:
        path = Path(os.fsdecode(job.file))
        parents, name = [], str(path)
    else:
        *parents, name = safe_open.split(job.file)
        path = Path(settings.root, *parents, name)
    before_read(path)
    try:
        folder = None if followed else tree.open(tuple(parents))
        described = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except safe_open.FolderError as error:
        return FileResult("error", error.reason, f"{error.folder}: {error.detail}", "", None, None), None
    except OSError as error:
        if error.errno in images.MACHINE_ERRORS:
            raise _machine_error(error, path) from None
        return FileResult("error", "unreadable", f"cannot read file: {error.strerror or error}", "", None, None), None
    if stat.S_ISLNK(described.st_mode):
        return FileResult("error", "link", "is a symbolic link; links are not followed", "", None, None), None
    if not stat.S_ISREG(described.st_mode):
        return FileResult("error", "special_file", "not a regular file (a FIFO, socket or device)", "", None,
                          None), None
    if not job.decode:
        detail = f"{path.suffix or 'no extension'} is not one of {', '.join(sorted(images.IMAGE_EXTENSIONS))}"
        return FileResult("error", "unsupported_format", detail, "", described.st_size, described.st_mtime_ns), None
    try:
        data = images.read_file(name, dir_fd=folder, max_bytes=settings.max_file_bytes)
    except images.ImageError as error:
        if error.reason == "too_large":  # described, not read
            detail = f"{error.detail}; not read"
            return FileResult("error", error.reason, detail, "", described.st_size, described.st_mtime_ns), None
        return FileResult("error", error.reason, error.detail, "", None, None), None
    except OSError as error:  # images.MACHINE_ERRORS only: read_file turns the file's own trouble into ImageError
        raise _machine_error(error, path) from None
    sha256 = hashlib.sha256(data).hexdigest()
    facts = dict(sha256=sha256, bytes=len(data), mtime_ns=described.st_mtime_ns)
    if job.expected_sha256 and job.expected_sha256 == sha256:
        return FileResult("reused", "", "", **facts), None
    try:
        pixels = images.decode_array(data, path, settings.image_size, settings.resize,  # type: ignore[arg-type]
                                     settings.max_pixels)
    except images.ImageError as error:
        detail = images.advice(error, {"too_many_pixels": "raise max_pixels"})
        return FileResult("error", error.reason, detail, **facts), None
    except Exception as error:  # anything else Pillow may raise on a hostile file must not stop the run
        detail = f"cannot decode image: {type(error).__name__}: {error}"
        return FileResult("error", "corrupt", detail, **facts), None
    return FileResult("ok", "", "", **facts), pixels


def read_batch(jobs: list[FileJob], settings: DecodeSettings) -> BatchResult:
    """read_file for each job; the decoded images stacked into one array (one transfer from a worker)."""
    results, decoded = [], []
    try:
        with safe_open.Folders(Path(settings.root)) as tree:
            for job in jobs:
                result, pixels = read_file(job, settings, tree)
                results.append(result)
                if pixels is not None:
                    decoded.append(pixels)
    except safe_open.FolderError as error:  # the folder classified is gone: every file of the batch with it
        results = [FileResult("error", error.reason, str(error), "", None, None) for _ in jobs]
    size = settings.image_size
    stacked = np.stack(decoded) if decoded else np.zeros((0, size, size, 3), dtype=np.uint8)
    return BatchResult(results, stacked)
