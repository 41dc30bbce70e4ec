"""Walks a folder tree safely: reads directory entries only, writes nothing, follows no link out of the tree.

One walker, one policy, for every folder imgpipe reads (ingest's source, predict's directory):
- files come in sorted order of their path relative to the root (a folder sorts as "name/"), streamed: only the
  folders being walked are held in memory;
- hidden entries (a name starting with "." and macOS's "__MACOSX" folders) are skipped, with everything below them;
- a link to a regular file inside the tree is read at its target (the link cannot be re-pointed between the walk and
  the read); links to folders, links out of the tree, dangling links and link loops are skipped, so the walk never
  loops.
  With follow_file_links (a trust decision the caller makes: ingest.follow_file_links, predict's option), a link
  to a regular file is followed wherever it points, for trees of links that split tools build; never a link to a
  folder;
- special files (FIFOs, sockets, devices) are skipped: reading one could block or never end;
- a folder that cannot be listed is skipped with a warning.
Each skipped entry is passed to `on_skipped(reason, relative path)` with the reason hidden, link, special_file or
unreadable_folder; `entries` gives the same walk with the skipped entries in their sorted place, for a caller that
reports every entry.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


logger = logging.getLogger(__name__)

SkipHandler = Callable[[str, str], None]


@dataclass(frozen=True)
class TreeFile:
    location: str  # where to read it (inside the tree); `path` is the same as a Path
    relative: str  # posix path relative to the root, as text that can be written anywhere
    relative_bytes: bytes = b""  # the same path exactly (lossless where a name is not UTF-8)
    skipped: str = ""  # from `entries` only: why it is not read (a reason above); "" for a file to read
    folder: bool = False  # from `entries` only: a skipped folder (hidden or unreadable), with all below it
    size: int = -1  # bytes and modification time when walked (-1: unknown): what an incremental run compares
    mtime_ns: int = -1
    link_target: str = ""  # for a link followed out of the tree (follow_file_links): where it points

    @property
    def path(self) -> Path:
        return Path(self.location)  # built on demand: a million Path objects cost seconds in the walk


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__MACOSX")


def readable_name(relative: Path) -> str:
    """A path as text that can be written anywhere (Parquet, CSV, JSON): bytes that are not UTF-8 become \\xNN."""
    return os.fsencode(relative).decode("utf-8", errors="backslashreplace").replace(os.sep, "/")


def _regular_file_stat(path: Path) -> os.stat_result | None:
    try:
        facts = path.stat()
    except OSError:
        return None
    return facts if stat.S_ISREG(facts.st_mode) else None


def _link_target(link: str) -> Path | None:
    """Where a link leads, every link on the way resolved; None for a loop (`ln -s self.png self.png`) or a chain
    that cannot be resolved: the link is skipped like a dangling one, and the walk goes on."""
    try:
        return Path(os.path.realpath(link, strict=True))
    except (OSError, RuntimeError):  # ELOOP, a missing target, a folder on the way that cannot be searched
        return None


def walk(root: Path, on_skipped: SkipHandler | None = None, follow_file_links: bool = False) -> Iterator[TreeFile]:
    """Every file under `root` that the policy above lets through, in sorted order of its relative path."""
    for entry in entries(root, follow_file_links):
        if not entry.skipped:
            yield entry
        elif on_skipped is not None:
            on_skipped(entry.skipped, entry.relative)


def entries(root: Path, follow_file_links: bool = False) -> Iterator[TreeFile]:
    """Every entry under `root` in sorted order of its relative path: the files to read, and the skipped entries
    (their `skipped` reason set; nothing below a skipped folder). Names that read the same (a name that is not
    UTF-8 beside one spelt with its backslash escape) come in the order of their bytes."""
    root = root.resolve()
    prefix = len(os.fsencode(os.path.join(root, "")))

    def sorted_entries(directory: Path) -> Iterator[tuple[str, bytes, os.DirEntry[str]]] | None:
        """(sort key: the readable relative path, "/" after a folder's; the name's bytes; the entry), sorted."""
        try:
            with os.scandir(directory) as scanned:
                listed = [(os.fsencode(entry.path)[prefix:].decode("utf-8", "backslashreplace")
                           + ("/" if entry.is_dir(follow_symlinks=False) else ""), os.fsencode(entry.name), entry)
                          for entry in scanned]
        except OSError as error:
            logger.warning("%s: cannot list folder (%s); its files were skipped", directory, error.strerror or error)
            return None
        return iter(sorted(listed, key=lambda item: item[:2]))

    top = sorted_entries(root)
    if top is None:
        yield TreeFile(str(root), ".", b".", "unreadable_folder", folder=True)
    stack = [top] if top is not None else []
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        sort_key, _, entry = item
        relative, is_folder = sort_key.removesuffix("/"), sort_key.endswith("/")
        path, relative_bytes = entry.path, os.fsencode(entry.path)[prefix:]
        if is_hidden(entry.name):
            yield TreeFile(path, relative, relative_bytes, "hidden", folder=is_folder)
        elif is_folder:
            below = sorted_entries(path)
            if below is None:
                yield TreeFile(path, relative, relative_bytes, "unreadable_folder", folder=True)
            else:
                stack.append(below)
        elif entry.is_symlink():
            target = _link_target(path)
            inside = target is not None and target.is_relative_to(root)
            facts = _regular_file_stat(target) if target is not None and (inside or follow_file_links) else None
            if facts is None:
                yield TreeFile(path, relative, relative_bytes, "link")
            else:
                yield TreeFile(str(target), relative, relative_bytes, size=facts.st_size, mtime_ns=facts.st_mtime_ns,
                               link_target="" if inside else str(target))
        elif entry.is_file(follow_symlinks=False):
            try:
                facts = entry.stat(follow_symlinks=False)
            except OSError:  # gone since it was listed: whoever reads it reports that
                yield TreeFile(path, relative, relative_bytes)
            else:
                yield TreeFile(path, relative, relative_bytes, size=facts.st_size, mtime_ns=facts.st_mtime_ns)
        else:
            yield TreeFile(path, relative, relative_bytes, "special_file")
