"""The plan's rows for what the walk of a folder finds: reads the folder tree (names and file sizes), writes nothing.

Every entry gets a row, so every entry gets a row in the table: a file to read, or an entry the walk skips
(tasks/source_tree.py: hidden names and __MACOSX folders, links to folders, out of the tree, dangling or in a
loop, special files, folders that cannot be listed), with its reason. A skipped folder is one row, "name/", for all
below it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks import images, source_tree

logger = logging.getLogger(__name__)

# What a `skipped` row says, by the walk's reason (tasks/source_tree.py).
SKIPPED_DETAILS = {
    "hidden": "hidden (a name starting with '.' or __MACOSX); not classified, nor anything in it",
    "link": "symbolic link to a folder, out of the folder classified, dangling or in a loop; links are not "
            "followed out of it (links to files are followed only when asked; links to folders never)",
    "special_file": "not a regular file (a FIFO, socket or device); not read",
    "unreadable_folder": "folder cannot be listed; its files were not classified",
}


def plan_rows(source: Path, out: Path, state: Path, follow_file_links: bool = False) -> Iterator[dict[str, Any]]:
    """One plan row per entry under `source` (resolved), in sorted path order; the table's own files left out."""
    prefix = len(os.fsencode(os.path.join(source, "")))
    for entry in source_tree.entries(source, follow_file_links):
        if not is_own_output(entry.path, out, state):  # the table is being written inside the folder it describes
            yield plan_row(entry, prefix)


def is_own_output(path: Path, out: Path, state: Path) -> bool:
    """The table, its resume state, or a temporary file of the table (a run killed while writing it)."""
    own_temporary = path.parent == out.parent and path.name.startswith(f".{out.name}.") and path.name.endswith(
        ".partial")
    return path == out or path.is_relative_to(state) or own_temporary


def plan_row(entry: source_tree.TreeFile, prefix: int) -> dict[str, Any]:
    """The plan's row for one entry of the walk: what to read (relative to the source; absolute for a link followed
    out of it) and what it was like."""
    folder = "/" if entry.folder else ""
    read_at = os.fsencode(entry.link_target) if entry.link_target else os.fsencode(entry.path)[prefix:]
    row = {"path": entry.relative + folder, "path_bytes": entry.relative_bytes + folder.encode(), "file": read_at, "decode": images.has_image_extension(entry.path),
           "skipped": entry.skipped, "bytes": None, "mtime_ns": None}
    if not entry.skipped:
        try:
            stat = entry.path.stat()
            row |= {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        except OSError:  # gone since the walk: the worker reports it
            pass
    return row


def log_skipped(source: Path, files: int, skipped: dict[str, tuple[int, str]]) -> None:
    """One line per reason an entry was not read: how many, why, and the first one."""
    for reason, (count, example) in sorted(skipped.items()):
        logger.log(logging.INFO if reason == "hidden" else logging.WARNING,
                   "%d entr%s under %s skipped (a row with status skipped each), reason %s: %s; e.g. %s", count,
                   "y" if count == 1 else "ies", source, reason, SKIPPED_DETAILS[reason], example)
    if files == sum(count for count, _ in skipped.values()):
        logger.warning("%s: no files to classify%s; the table lists only %s", source,
                       f" ({files} entries skipped, see above)" if files else "", "skipped entries" if files
                       else "nothing")
