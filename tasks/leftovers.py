"""Leftovers of a killed run: removes the temporary folders that tasks/atomic.py's atomic_directory leaves beside an
output folder when the process dies before its rename (.NAME.*.partial, and .NAME.old between its two renames).

Call it only while holding the run lock: no other imgpipe run can be building one of these folders then.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)


def temporary_folders(output: Path) -> list[Path]:
    """The temporary folders atomic_directory(output) may have left, by its naming convention."""
    parent = output.parent
    if not parent.is_dir():
        return []
    found = [folder for folder in parent.glob(f".{output.name}.*.partial") if folder.is_dir()]
    old = parent / f".{output.name}.old"
    return sorted(found + ([old] if old.is_dir() else []))


def remove_within(folder: Path) -> list[Path]:
    """Remove every temporary folder directly inside `folder` (those of outputs that never got renamed into place)."""
    if not folder.is_dir():
        return []
    found = [item for item in folder.iterdir() if item.is_dir() and item.name.startswith(".")
             and item.name.endswith((".partial", ".old"))]
    for item in sorted(found):
        shutil.rmtree(item)
        logger.info("removed %s, left by an interrupted run", item)
    return sorted(found)


def remove(outputs: list[Path]) -> list[Path]:
    """Remove what killed runs left beside each of `outputs`; return what was removed."""
    removed = []
    for output in outputs:
        for folder in temporary_folders(output):
            shutil.rmtree(folder)
            logger.info("removed %s, left by an interrupted run", folder)
            removed.append(folder)
    return removed
