"""Examines source files: reads each once (images.read_file), hashes it and fully decodes it to check it; reads
the files, writes nothing.

Worker processes import this module: pandas, pydantic and tqdm are imported where the main process uses them, not
here, which saves each worker 0.3 s or more of start-up.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks import images
from tasks.ingest.near_duplicates import HASH_INPUT_SIDE, perceptual_hash

# A verdict holds only for the same checks: bump the version when examine() changes what it decides.
CHECKS_VERSION = 3
# Reasons that say nothing about a file's content: a file quarantined for one is examined again next run.
READ_REASONS = frozenset({"unreadable", "link", "special_file"})
# What a quarantine reason asks the user to change.
_ADVICE = {"too_many_pixels": "raise ingest.max_pixels", "too_small": "lower ingest.min_side"}
VERDICT_FIELDS = ("width", "height", "format", "mode", "orientation", "phash", "reason", "detail")


def checks(max_pixels: int, min_side: int) -> str:
    """The settings a verdict was made under; a verdict is reused only under the same."""
    return f"v{CHECKS_VERSION} max_pixels={max_pixels} min_side={min_side}"


@dataclass(frozen=True)
class FileJob:
    path: str  # where to read the file
    source_path: str  # posix path relative to the source root
    previous: dict[str, Any] | None = None  # the verdict of an earlier run on this path, reused if the sha256 matches


@dataclass
class Examined:
    record: dict[str, Any]  # sha256, bytes and the verdict fields; reason is "" for a good image
    data: bytes | None = field(default=None, repr=False)  # the file's bytes, for a good image


def examine(job: FileJob, max_pixels: int, min_side: int) -> Examined:
    """Read, hash and (unless an earlier verdict for the same bytes is given) fully decode one file.

    A file's own trouble (gone, unreadable, a link or a FIFO at its name, not an image, corrupt, too large or
    small) becomes a quarantine reason; an error of the machine (disk, I/O, file handles) is raised.
    """
    record: dict[str, Any] = {"source_path": job.source_path, "sha256": "", "bytes": 0, "width": 0, "height": 0,
                              "format": "", "mode": "", "orientation": 0, "phash": "", "reason": "", "detail": ""}
    try:
        data = images.read_file(Path(job.path))
    except images.ImageError as error:
        return Examined(record | {"reason": error.reason, "detail": error.detail})
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


class Examiner:
    """examine() with fixed settings, as one picklable callable for worker processes."""

    def __init__(self, max_pixels: int, min_side: int) -> None:
        self.max_pixels = max_pixels
        self.min_side = min_side

    def __call__(self, job: FileJob) -> Examined:
        return examine(job, self.max_pixels, self.min_side)
