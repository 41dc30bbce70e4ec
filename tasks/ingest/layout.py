"""Turns the source folder into labelled files: reads directory entries (and a label table, when given); writes nothing.

Three layouts (ingest.layout, ingest.labels):
- classes: one sub-folder per class, any depth below it (`cat/x.jpg`, `dog/2024/y.png`);
- split folders, recognised by `auto`: top-level train/, val/ (or valid/, validation/) and test/ folders with
  class folders inside (`train/cat/x.jpg`); the split given is kept;
- a label table (ingest.labels): the table names each file, its label(s), and optionally its split and subject;
  a row naming a file that is not there is quarantined, a file no row names is counted and left out.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from tasks import images, source_tree
from tasks.ingest import label_table

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceFile:
    location: str  # where to read it
    source_path: str  # posix path relative to the source root, used in reports
    label: str  # one label, or several joined with ";" (multi-label)
    size: int = -1
    mtime_ns: int = -1
    split: str = ""  # given by the layout or the table: train, val, test; "" for none
    subject: str = ""  # given by the table's group column; "" for none
    link_target: str = ""  # a followed link's target (ingest.follow_file_links)

    @property
    def path(self) -> Path:
        return Path(self.location)


@dataclass
class SourceScan:
    layout: str = "classes"
    files: list[SourceFile] = field(default_factory=list)
    non_image_files: list[str] = field(default_factory=list)
    root_files: list[str] = field(default_factory=list)
    empty_class_folders: list[str] = field(default_factory=list)
    skipped_links: list[str] = field(default_factory=list)
    unreadable_folders: list[str] = field(default_factory=list)
    hidden_entries: int = 0
    unlisted_files: list[str] = field(default_factory=list)  # with a label table: files no row names
    unusable_rows: list[dict[str, str]] = field(default_factory=list)  # rows naming no file, or no label

    @property
    def labels(self) -> list[str]:
        return sorted({file.label for file in self.files})


def _top_folders(root: Path) -> list[str]:
    """The names of the folders directly under root (not hidden, not links)."""
    with os.scandir(root) as found:
        return sorted(source_tree.readable_name(Path(entry.name)) for entry in found
                      if not source_tree.is_hidden(entry.name) and entry.is_dir(follow_symlinks=False))


def detect(root: Path, layout: str) -> str:
    """`classes` or `splits`: what `auto` finds (every top-level folder a split name) or what was asked for."""
    if layout != "auto":
        return layout
    folders = _top_folders(root)
    named = [folder for folder in folders if folder.lower() in label_table.SPLIT_NAMES]
    if named and len(named) == len(folders):
        return "splits"
    if named:
        logger.warning("%s: folder(s) %s look like splits but other top-level folders do not; read as class "
                       "folders (set ingest.layout: classes to silence this, or put every class under a split "
                       "folder)", root, ", ".join(named))
    return "classes"


def scan(source: Path, layout: str = "auto", labels: Path | None = None,
         follow_file_links: bool = False) -> SourceScan:
    """The candidate image files of a source folder, labelled by its layout or by a label table."""
    if not source.is_dir():
        raise ValueError(f"{source}: source folder not found; set ingest.source to a folder of images")
    root = source.resolve()
    result = SourceScan(layout="table" if labels is not None else detect(root, layout))
    table = label_table.read(labels) if labels is not None else None

    def on_skipped(reason: str, relative: str) -> None:
        if reason == "hidden":
            result.hidden_entries += 1
        elif reason == "link":
            result.skipped_links.append(relative)
        elif reason == "unreadable_folder":
            result.unreadable_folders.append(relative)
        else:  # a FIFO, socket or device: not an image file, whatever its name
            result.non_image_files.append(relative)

    seen: set[str] = set()
    for file in source_tree.walk(root, on_skipped, follow_file_links):
        facts = dict(size=file.size, mtime_ns=file.mtime_ns, link_target=file.link_target)
        parts = file.relative.split("/")
        if table is not None:
            seen.add(file.relative)
            row = table.get(file.relative)
            if row is None:
                result.unlisted_files.append(file.relative)
            elif not row.label:
                result.unusable_rows.append({"source_path": file.relative, "reason": "no_label",
                                             "detail": f"the label table {labels} gives it no label"})
            else:
                result.files.append(SourceFile(file.location, file.relative, row.label, split=row.split,
                                               subject=row.subject, **facts))
        elif not images.has_image_extension(file.relative):
            (result.non_image_files if len(parts) > 1 else result.root_files).append(file.relative)
        elif result.layout == "splits" and len(parts) > 2:
            split = label_table.SPLIT_NAMES[parts[0].lower()]
            result.files.append(SourceFile(file.location, file.relative, parts[1], split=split, **facts))
        elif result.layout == "classes" and len(parts) > 1:
            result.files.append(SourceFile(file.location, file.relative, parts[0], **facts))
        else:
            result.root_files.append(file.relative)
    if table is not None:
        for path in sorted(set(table) - seen):
            result.unusable_rows.append({"source_path": path, "reason": "missing_file",
                                         "detail": f"listed in {labels} but not found under {source} (as a regular "
                                                   "file; links are followed only with ingest.follow_file_links)"})
    _report(root, result, labels)
    return result


MOST_NAMED = 10  # folders named one by one in the log; the rest are counted


def _report(root: Path, result: SourceScan, labels: Path | None) -> None:
    """Say what was left out and why; a source with no usable image is an error."""
    if result.layout == "classes":
        present = set(result.labels)
        result.empty_class_folders = [folder for folder in _top_folders(root) if folder not in present]
        for folder in result.empty_class_folders[:MOST_NAMED]:
            links = sum(1 for link in result.skipped_links if link.startswith(folder + "/"))
            why = (f"holds only links ({links}), which are not followed; set ingest.follow_file_links: true to "
                   "read a tree of links" if links else "holds no image files")
            logger.warning("%s: class folder %s; it is not a class", root / folder, why)
        if len(result.empty_class_folders) > MOST_NAMED:
            logger.warning("%d more folders under %s hold no image files and are not classes; is ingest.source the "
                           "folder of class folders?", len(result.empty_class_folders) - MOST_NAMED, root)
    if result.root_files:
        where = "a class folder" if result.layout == "classes" else "a class folder inside a split folder"
        logger.warning("%d file(s) directly under %s belong to no class and were skipped (e.g. %s); move them into %s",
                       len(result.root_files), root, result.root_files[0], where)
    if result.skipped_links:
        logger.warning("%d link(s) were not followed (folder links always; file links out of the tree unless "
                       "ingest.follow_file_links: true): e.g. %s", len(result.skipped_links), result.skipped_links[0])
    if result.unlisted_files:
        logger.warning("%d file(s) under %s are not in the label table %s and were left out (e.g. %s)",
                       len(result.unlisted_files), root, labels, result.unlisted_files[0])
    if not result.files:
        where = (f"no file of the label table {labels} was found under {root}" if labels is not None else
                 f"no image files found under {root}; expected class folders ({root}/<label>/<image>) or split "
                 f"folders ({root}/train/<label>/<image>) with extensions "
                 f"{', '.join(sorted(images.IMAGE_EXTENSIONS))}")
        raise ValueError(f"{root}: {where}")
