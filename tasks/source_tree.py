"""Walks a folder of class sub-folders safely: reads directory entries only, writes nothing, follows no link out of the tree."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from tasks import images

logger = logging.getLogger(__name__)


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


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__MACOSX")


def _readable_name(relative: Path) -> str:
    """A path as text that can be written anywhere (Parquet, CSV, JSON): bytes that are not UTF-8 become \\xNN."""
    return os.fsencode(relative).decode("utf-8", errors="backslashreplace").replace(os.sep, "/")


def _is_regular_file(path: Path) -> bool:
    """True for a plain file; false for a FIFO, socket or device (reading one could block or never end)."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _walk_class_folder(class_dir: Path, root: Path, label: str, scan: SourceScan) -> int:
    """Add the image files under one class folder to `scan`; return how many were added."""
    added = 0

    def unreadable(error: OSError) -> None:
        folder = _readable_name(Path(error.filename).relative_to(root)) if error.filename else str(error)
        scan.unreadable_folders.append(folder)
        logger.warning("%s: cannot list folder (%s); its files were skipped", error.filename, error.strerror or error)

    # os.walk never descends into directory links when followlinks=False, so loops cannot happen.
    for directory, subdirectories, file_names in os.walk(class_dir, onerror=unreadable, followlinks=False):
        directory_path = Path(directory)
        for name in list(subdirectories):
            if _is_hidden(name):
                scan.hidden_entries += 1
                subdirectories.remove(name)
            elif (directory_path / name).is_symlink():
                scan.skipped_links.append(_readable_name((directory_path / name).relative_to(root)))
        subdirectories.sort()
        for name in sorted(file_names):
            path = directory_path / name
            relative = _readable_name(path.relative_to(root))
            if _is_hidden(name):
                scan.hidden_entries += 1
                continue
            if path.is_symlink():
                target = path.resolve()
                if not _inside(target, root) or not target.is_file():
                    scan.skipped_links.append(relative)
                    continue
                path = target  # read the file itself: the link cannot be re-pointed between scan and read
            if not images.has_image_extension(name) or not _is_regular_file(path):
                scan.non_image_files.append(relative)
                continue
            scan.files.append(SourceFile(path=path, source_path=relative, label=label))
            added += 1
    return added


def scan_source(source: Path) -> SourceScan:
    """List the candidate image files of a source folder (one sub-folder per class, any depth below it)."""
    if not source.is_dir():
        raise ValueError(f"{source}: source folder not found; set ingest.source to a folder of class sub-folders")
    root = source.resolve()
    scan = SourceScan()
    for entry in sorted(os.scandir(root), key=lambda item: item.name):
        if _is_hidden(entry.name):
            scan.hidden_entries += 1
        elif entry.is_symlink():
            scan.skipped_links.append(_readable_name(Path(entry.name)))
        elif entry.is_dir(follow_symlinks=False):
            label = _readable_name(Path(entry.name))
            if _walk_class_folder(Path(entry.path), root, label, scan) == 0:
                scan.empty_class_folders.append(label)
                logger.warning("%s: class folder holds no image files; it is not a class", entry.path)
        else:
            scan.root_files.append(_readable_name(Path(entry.name)))
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


from collections.abc import Callable, Iterator  # noqa: E402  (for walk_files, kept beside it)


def walk_files(root: Path, on_skipped: Callable[[str, str], None] | None = None) -> Iterator[tuple[Path, str]]:
    """Every regular, non-hidden file at any depth under `root`, as (where to read it, posix path relative to root),
    in sorted order of the relative path, streamed (only the folders being walked are held in memory).

    A link to a file inside the tree is read at its target; links out of the tree, folder links, special files
    (FIFOs, sockets, devices) and folders that cannot be listed are passed to `on_skipped(reason, relative path)`.
    """
    root = root.resolve()
    skipped = on_skipped or (lambda reason, relative: None)

    def sorted_entries(directory: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
        try:
            with os.scandir(directory) as scanned:
                # A folder sorts as "name/", so that every path below it sorts where its full relative path does.
                entries = [(_readable_name(Path(entry.name)) + ("/" if entry.is_dir(follow_symlinks=False) else ""),
                            entry) for entry in scanned if not _is_hidden(entry.name)]
        except OSError as error:
            skipped("unreadable_folder", _readable_name(directory.relative_to(root)))
            logger.warning("%s: cannot list folder (%s); its files were skipped", directory, error.strerror or error)
            return iter(())
        return iter(sorted(entries, key=lambda item: item[0]))

    stack = [sorted_entries(root)]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        entry = item[1]
        path = Path(entry.path)
        relative = _readable_name(path.relative_to(root))
        if entry.is_dir(follow_symlinks=False):
            stack.append(sorted_entries(path))
        elif entry.is_symlink():
            target = path.resolve()
            if _inside(target, root) and _is_regular_file(target):
                yield target, relative
            else:
                skipped("link", relative)
        elif entry.is_file(follow_symlinks=False):
            yield path, relative
        else:
            skipped("special_file", relative)
