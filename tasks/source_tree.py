"""Walks a folder tree safely: reads directory entries only, writes nothing, follows no link out of the tree.

One walker, one policy, for every folder imgpipe reads (ingest's source, predict's directory):
- files come in sorted order of their path relative to the root (a folder sorts as "name/"), streamed: only the
  folders being walked are held in memory;
- hidden entries (a name starting with "." and macOS's "__MACOSX" folders) are skipped, with everything below them;
- a link to a regular file inside the tree is read at its target (the link cannot be re-pointed between the walk and
  the read); links to folders, links out of the tree and dangling links are skipped, so the walk never loops;
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
from dataclasses import dataclass, field
from pathlib import Path

from tasks import images

logger = logging.getLogger(__name__)

SkipHandler = Callable[[str, str], None]


@dataclass(frozen=True)
class TreeFile:
    path: Path  # where to read it (inside the tree)
    relative: str  # posix path relative to the root, as text that can be written anywhere
    relative_bytes: bytes = b""  # the same path exactly (lossless where a name is not UTF-8)
    skipped: str = ""  # from `entries` only: why it is not read (a reason above); "" for a file to read
    folder: bool = False  # from `entries` only: a skipped folder (hidden or unreadable), with all below it


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__MACOSX")


def readable_name(relative: Path) -> str:
    """A path as text that can be written anywhere (Parquet, CSV, JSON): bytes that are not UTF-8 become \\xNN."""
    return os.fsencode(relative).decode("utf-8", errors="backslashreplace").replace(os.sep, "/")


def _is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def walk(root: Path, on_skipped: SkipHandler | None = None) -> Iterator[TreeFile]:
    """Every file under `root` that the policy above lets through, in sorted order of its relative path."""
    for entry in entries(root):
        if not entry.skipped:
            yield entry
        elif on_skipped is not None:
            on_skipped(entry.skipped, entry.relative)


def entries(root: Path) -> Iterator[TreeFile]:
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
        yield TreeFile(root, ".", b".", "unreadable_folder", folder=True)
    stack = [top] if top is not None else []
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        sort_key, _, entry = item
        path, relative, is_folder = Path(entry.path), sort_key.removesuffix("/"), sort_key.endswith("/")
        relative_bytes = os.fsencode(entry.path)[prefix:]
        if is_hidden(entry.name):
            yield TreeFile(path, relative, relative_bytes, "hidden", folder=is_folder)
        elif is_folder:
            below = sorted_entries(path)
            if below is None:
                yield TreeFile(path, relative, relative_bytes, "unreadable_folder", folder=True)
            else:
                stack.append(below)
        elif entry.is_symlink():
            target = path.resolve()
            skipped = "" if target.is_relative_to(root) and _is_regular_file(target) else "link"
            yield TreeFile(path if skipped else target, relative, relative_bytes, skipped)
        elif entry.is_file(follow_symlinks=False):
            yield TreeFile(path, relative, relative_bytes)
        else:
            yield TreeFile(path, relative, relative_bytes, "special_file")


@dataclass(frozen=True)
class SourceFile:
    path: Path  # where to read it (inside the source tree)
    source_path: str  # posix path relative to the source root, used in reports
    label: str


@dataclass
class SourceScan:
    files: list[SourceFile] = field(default_factory=list)
    non_image_files: list[str] = field(default_factory=list)
    root_files: list[str] = field(default_factory=list)
    empty_class_folders: list[str] = field(default_factory=list)
    skipped_links: list[str] = field(default_factory=list)
    unreadable_folders: list[str] = field(default_factory=list)
    hidden_entries: int = 0

    @property
    def labels(self) -> list[str]:
        return sorted({file.label for file in self.files})


def _class_folders(root: Path) -> list[str]:
    """The names of the folders directly under root that can be classes (not hidden, not links)."""
    with os.scandir(root) as entries:
        return sorted(readable_name(Path(entry.name)) for entry in entries
                      if not is_hidden(entry.name) and entry.is_dir(follow_symlinks=False))


def scan_source(source: Path) -> SourceScan:
    """List the candidate image files of a source folder: one sub-folder per class, any depth below it."""
    if not source.is_dir():
        raise ValueError(f"{source}: source folder not found; set ingest.source to a folder of class sub-folders")
    root = source.resolve()
    scan = SourceScan()

    def on_skipped(reason: str, relative: str) -> None:
        if reason == "hidden":
            scan.hidden_entries += 1
        elif reason == "link":
            scan.skipped_links.append(relative)
        elif reason == "unreadable_folder":
            scan.unreadable_folders.append(relative)
        else:  # a FIFO, socket or device: not an image file, whatever its name
            scan.non_image_files.append(relative)

    for file in walk(root, on_skipped):
        label, separator, _ = file.relative.partition("/")
        if not separator:
            scan.root_files.append(file.relative)
        elif not images.has_image_extension(file.relative):
            scan.non_image_files.append(file.relative)
        else:
            scan.files.append(SourceFile(file.path, file.relative, label))
    labels = set(scan.labels)
    for folder in _class_folders(root):
        if folder not in labels:
            scan.empty_class_folders.append(folder)
            logger.warning("%s: class folder holds no image files; it is not a class", root / folder)
    if scan.root_files:
        logger.warning(
            "%d file(s) directly under %s belong to no class and were skipped (e.g. %s); move them into a class folder",
            len(scan.root_files), root, scan.root_files[0],
        )
    if scan.skipped_links:
        logger.warning("%d link(s) were not followed (directory links, or links out of the tree): e.g. %s",
                       len(scan.skipped_links), scan.skipped_links[0])
    if not scan.files:
        raise ValueError(
            f"{source}: no image files found in class sub-folders; expected {source}/<label>/<image> "
            f"with extensions {', '.join(sorted(images.IMAGE_EXTENSIONS))}"
        )
    return scan
