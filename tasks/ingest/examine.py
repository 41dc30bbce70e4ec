"""Examines source files: reads each once (images.read_file), hashes it and fully decodes it to check it; reads
the files, writes nothing.

A file under the source root is read through its folders, each opened from the root down without following a link
(tasks/safe_open.py): a folder swapped for a link between the walk and the read is refused, never followed. A file
over ingest.max_file_bytes is refused before it is read (fstat of the open file), so one huge or sparse file
cannot fill the memory.

Worker processes import this module: pandas, pydantic and tqdm are imported where the main process uses them, not
here, which saves each worker 0.3 s or more of start-up.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks import images, safe_open
from tasks.ingest.near_duplicates import HASH_INPUT_SIDE, perceptual_hash

# A verdict holds only for the same checks: bump the version when examine() changes what it decides.
CHECKS_VERSION = 3
# Reasons that say nothing about a file's content: a file quarantined for one is examined again next run.
READ_REASONS = frozenset({"unreadable", "link", "special_file", "not_a_folder", "name_too_long"})
# What a quarantine reason asks the user to change.
_ADVICE = {"too_many_pixels": "raise ingest.max_pixels", "too_small": "lower ingest.min_side",
           "too_large": "raise ingest.max_file_bytes"}
VERDICT_FIELDS = ("width", "height", "format", "mode", "orientation", "phash", "reason", "detail")


def checks(max_pixels: int, min_side: int, max_file_bytes: int | None = None) -> str:
    """The settings a verdict was made under; a verdict is reused only under the same."""
    limit = "" if max_file_bytes is None else f" max_file_bytes={max_file_bytes}"
    return f"v{CHECKS_VERSION} max_pixels={max_pixels} min_side={min_side}{limit}"


@dataclass(frozen=True)
class FileJob:
    path: str  # where to read the file: below the examiner's root, or a link's target out of it (follow_file_links)
    source_path: str  # posix path relative to the source root
    previous: dict[str, Any] | None = None  # the verdict of an earlier run on this path, reused if the sha256 matches


@dataclass
class Examined:
    record: dict[str, Any]  # sha256, bytes and the verdict fields; reason is "" for a good image
    data: bytes | None = field(default=None, repr=False)  # the file's bytes, for a good image


def examine(job: FileJob, max_pixels: int, min_side: int, max_file_bytes: int = images.MAX_FILE_BYTES,
            root: str | None = None) -> Examined:
    """Read, hash and (unless an earlier verdict for the same bytes is given) fully decode one file.

    `root` is the source root as the walk resolved it: a file below it is read through folders opened from there
    (None: the path as it is, for a single file). A file's own trouble (gone, unreadable, a link or a FIFO at its
    name or a link for one of its folders, not an image, corrupt, too many or few pixels, too many bytes) becomes a
    quarantine reason; an error of the machine (disk, I/O, file handles) is raised.
    """
    record: dict[str, Any] = {"source_path": job.source_path, "sha256": "", "bytes": 0, "width": 0, "height": 0,
                              "format": "", "mode": "", "orientation": 0, "phash": "", "reason": "", "detail": ""}
    try:
        data = _read(job.path, max_file_bytes, root)
    except images.ImageError as error:
        return Examined(record | {"reason": error.reason, "detail": images.advice(error, _ADVICE)})
    record |= {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    previous = job.previous
    if previous is not None and previous.get("sha256") == record["sha256"]:
        record |= {name: previous[name] for name in VERDICT_FIELDS}
    else:
        try:
            info, rgb = images.inspect_bytes(data, job.source_path, max_pixels, min_side, draft_size=HASH_INPUT_SIDE)
            record |= {"width": info.width, "height": info.height, "format": info.format, "mode": info.mode,
                       "orientation": info.orientation, "phash": perceptual_hash(rgb)}
        except images.ImageError as error:
            record |= {"reason": error.reason, "detail": images.advice(error, _ADVICE)}
    return Examined(record, None if record["reason"] else data)


def _read(path: str, max_file_bytes: int, root: str | None) -> bytes:
    """The file's bytes: relative to `root` folder by folder when it lies below it, else at its path."""
    if root is not None:
        prefix, location = os.fsencode(os.path.join(root, "")), os.fsencode(path)
        if location.startswith(prefix):
            return safe_open.read_file(Path(root), location[len(prefix):], max_file_bytes)
    return images.read_file(path, max_bytes=max_file_bytes)


class Examiner:
    """examine() with fixed settings, as one picklable callable for worker processes."""

    def __init__(self, max_pixels: int, min_side: int, max_file_bytes: int = images.MAX_FILE_BYTES,
                 root: str | None = None) -> None:
        self.max_pixels = max_pixels
        self.min_side = min_side
        self.max_file_bytes = max_file_bytes
        self.root = root  # the source root as the walk resolved it (layout.SourceScan.root)

    def __call__(self, job: FileJob) -> Examined:
        return examine(job, self.max_pixels, self.min_side, self.max_file_bytes, self.root)
