"""Walks a folder of class sub-folders safely: reads directory entries only, writes nothing, follows no link out of the tree."""

from __future__ import annotations

import logging
import os
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
    hidden_entries: int = 0

    @property
    def labels(self) -> list[str]:
        return sorted({file.label for file in self.files})


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.startswith("__MACOSX")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _walk_class_folder(class_dir: Path, root: Path, label: str, scan: SourceScan) -> int:
    """Add the image files under one class folder to `scan`; return how many were added."""
    added = 0
    # os.walk never descends into directory links when followlinks=False, so loops cannot happen.
    for directory, subdirectories, file_names in os.walk(class_dir, followlinks=False):
        directory_path = Path(directory)
        for name in list(subdirectories):
            if _is_hidden(name):
                scan.hidden_entries += 1
                subdirectories.remove(name)
            elif (directory_path / name).is_symlink():
                scan.skipped_links.append((directory_path / name).relative_to(root).as_posix())
        subdirectories.sort()
        for name in sorted(file_names):
            path = directory_path / name
            relative = path.relative_to(root).as_posix()
            if _is_hidden(name):
                scan.hidden_entries += 1
                continue
            if path.is_symlink():
                target = path.resolve()
                if not _inside(target, root) or not target.is_file():
                    scan.skipped_links.append(relative)
                    continue
            if not images.has_image_extension(name):
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
            scan.skipped_links.append(entry.name)
        elif entry.is_dir(follow_symlinks=False):
            if _walk_class_folder(Path(entry.path), root, entry.name, scan) == 0:
                scan.empty_class_folders.append(entry.name)
                logger.warning("%s: class folder holds no image files; it is not a class", entry.path)
        else:
            scan.root_files.append(entry.name)
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
