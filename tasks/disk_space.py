"""Says a full disk in plain words (which folder, how much is free and needed, what to do); reads the free space of
a folder, writes nothing."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class DiskFull(OSError):
    """A write failed, or would fail, for want of space; the message says where and what to do."""

    def __init__(self, folder: Path, what: str, needed_bytes: int | None = None) -> None:
        super().__init__(errno.ENOSPC, message(folder, what, needed_bytes))
        self.folder = folder


def is_full(error: BaseException) -> bool:
    """Whether an error from a write means a full disk (or quota): an OSError's errno, or the system's words inside
    the message of a library that wraps it (h5py, TensorFlow's ResourceExhaustedError)."""
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "errno = 28" in text or "Disk quota exceeded" in text


def free_bytes(folder: Path) -> int | None:
    """The bytes free for writing in `folder` (its nearest existing parent), None when that cannot be known."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


def message(folder: Path, what: str, needed_bytes: int | None = None) -> str:
    """`the disk is full: cannot write <what> in <folder> (N MiB free, about M MiB needed); free space ...`."""
    free = free_bytes(folder)
    figures = [f"{_size(free)} free" if free is not None else "free space unknown"]
    if needed_bytes:
        figures.append(f"about {_size(needed_bytes)} needed")
    return (f"the disk is full: cannot write {what} in {folder} ({', '.join(figures)}); free space on that disk "
            f"(or point paths.* in params.yaml to a larger one) and run again")
