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
unreadable_folder.
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
    size: int  # bytes and modification time when walked: what an incremental run compares, without reading
    mtime_ns: int


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


def _readable_entry_name(name: str) -> str:
    """readable_name of one entry name, without building a path (the walk's hot loop)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, held as surrogates: spelt as \xNN
        return os.fsencode(name).decode("utf-8", errors="backslashreplace")
    return name


def walk(root: Path, on_skipped: SkipHandler | None = None) -> Iterator[TreeFile]:
    """Every file under `root` that the policy above lets through, in sorted order of its relative path."""
    root = root.resolve()
    skipped = on_skipped or (lambda reason, relative: None)

    def sorted_entries(directory: str, prefix: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
        try:
            with os.scandir(directory) as scanned:
                entries = []
                for entry in scanned:
                    relative = prefix + _readable_entry_name(entry.name)
                    if is_hidden(entry.name):
                        skipped("hidden", relative)
                        continue
                    entries.append((relative + ("/" if entry.is_dir(follow_symlinks=False) else ""), entry))
        except OSError as error:
            skipped("unreadable_folder", prefix.removesuffix("/"))
            logger.warning("%s: cannot list folder (%s); its files were skipped", directory, error.strerror or error)
            return iter(())
        return iter(sorted(entries, key=lambda item: item[0]))

    stack = [sorted_entries(str(root), "")]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        sort_key, entry = item
        if entry.is_dir(follow_symlinks=False):
            stack.append(sorted_entries(entry.path, sort_key))
            continue
        path, relative = Path(entry.path), sort_key
        if entry.is_symlink():
            target = path.resolve()
            facts = _regular_file_stat(target) if target.is_relative_to(root) else None
            if facts is not None:
                yield TreeFile(target, relative, facts.st_size, facts.st_mtime_ns)
            else:
                skipped("link", relative)
        elif entry.is_file(follow_symlinks=False):
            try:
                facts = entry.stat(follow_symlinks=False)
            except OSError:  # gone since it was listed: whoever reads it reports that
                yield TreeFile(path, relative, -1, -1)
            else:
                yield TreeFile(path, relative, facts.st_size, facts.st_mtime_ns)
        else:
            skipped("special_file", relative)


@dataclass(frozen=True)
class SourceFile:
    path: Path  # where to read it (inside the source tree)
    source_path: str  # posix path relative to the source root, used in reports
    label: str
    size: int = -1
    mtime_ns: int = -1


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
            scan.files.append(SourceFile(file.path, file.relative, label, file.size, file.mtime_ns))
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
