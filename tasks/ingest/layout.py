"""Turns the source folder into labelled files: reads directory entries (and a label table, when given); writes nothing.

Three layouts (ingest.layout, ingest.labels):
- classes: one sub-folder per class, any depth below it (`cat/x.jpg`, `dog/2024/y.png`);
- split folders, recognised by `auto`: top-level train/, val/ (or valid/, validation/) and test/ folders with
  class folders inside (`train/cat/x.jpg`); the split given is kept; two folders for one split (val/ and valid/)
  are refused, not merged; split folders that hold images directly are told to set ingest.layout: classes if
  they are classes;
- a label table (ingest.labels): the table names each file, its label(s), and optionally its split and subject;
  a row naming a file that is not there is quarantined, a file no row names is counted and left out.
A label with a control character (a newline, a tab; tasks/ingest/label_text.py), from a folder's name or a table's
row, is refused: its files are quarantined (reason bad_label), each row named.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tasks import images, label_table, source_tree
from tasks.ingest import label_text

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
    root: str = ""  # the source folder as the walk resolved it: the files' locations lie below it
    files: list[SourceFile] = field(default_factory=list)
    non_image_files: list[str] = field(default_factory=list)
    root_files: list[str] = field(default_factory=list)
    empty_class_folders: list[str] = field(default_factory=list)
    skipped_links: list[str] = field(default_factory=list)
    unreadable_folders: list[str] = field(default_factory=list)
    hidden_entries: int = 0
    unlisted_files: list[str] = field(default_factory=list)  # with a label table: files no row names
    unusable_rows: list[dict[str, str]] = field(default_factory=list)  # rows naming no file, no label, a bad label

    @property
    def labels(self) -> list[str]:
        return sorted({file.label for file in self.files})


def _from_class_folder(parts: list[str]) -> tuple[str, str] | None:
    """classes: `cat/2024/x.jpg` is a cat, of no given split; a file directly under the source belongs to none."""
    return (parts[0], "") if len(parts) > 1 else None


def _from_split_folder(parts: list[str]) -> tuple[str, str] | None:
    """splits: `train/cat/x.jpg` is a cat of the train split; a file directly in a split folder belongs to none."""
    return (parts[1], label_table.SPLIT_NAMES[parts[0].lower()]) if len(parts) > 2 else None


# The layout registry: each way a source folder's paths give labels (and splits), by its name in ingest.layout (auto
# detects splits, tasks/ingest/layout.py detect()): the image's path parts below the source -> (label, split), or None
# for a file that belongs to no class. A label table (ingest.labels) is the other way, read by tasks/label_table.py.
FOLDER_LAYOUTS: dict[str, Callable[[list[str]], tuple[str, str] | None]] = {
    "classes": _from_class_folder,
    "splits": _from_split_folder,
}


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
        _refuse_two_folders_for_one_split(root, named)
        return "splits"
    if named:
        logger.warning("%s: folder(s) %s look like splits but other top-level folders do not; read as class "
                       "folders (set ingest.layout: classes to silence this, or put every class under a split "
                       "folder)", root, ", ".join(named))
    return "classes"


def _refuse_two_folders_for_one_split(root: Path, split_folders: list[str]) -> None:
    """val/ and valid/ (or Train/ and train/) name one split: merging them silently could hide a stale copy."""
    by_split: dict[str, list[str]] = {}
    for folder in split_folders:
        by_split.setdefault(label_table.SPLIT_NAMES[folder.lower()], []).append(folder)
    for split, folders in sorted(by_split.items()):
        if len(folders) > 1:
            named = " and ".join(f"{folder}/" for folder in folders)
            raise ValueError(f"{root}: folders {named} both name the {split} split; ingest does not merge them: move "
                             f"their class folders into one of them (or set ingest.layout: classes if "
                             f"{', '.join(folders)} are classes)")


def scan(source: Path, layout: str = "auto", labels: Path | None = None,
         follow_file_links: bool = False) -> SourceScan:
    """The candidate image files of a source folder, labelled by its layout or by a label table."""
    if not source.is_dir():
        raise ValueError(f"{source}: source folder not found; set ingest.source to a folder of images")
    if layout != "auto" and layout not in FOLDER_LAYOUTS:
        raise ValueError(f"ingest.layout {layout!r} is not one of auto, {', '.join(FOLDER_LAYOUTS)}; set it in "
                         "params.yaml")
    root = source.resolve()
    result = SourceScan(layout="table" if labels is not None else detect(root, layout), root=str(root))
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
            elif found := label_text.control_character(row.label):
                result.unusable_rows.append({"source_path": file.relative, "reason": "bad_label",
                                             "detail": f"the label table {labels} gives it a label holding {found}; "
                                                       "labels must be printable text: fix the row"})
            else:
                result.files.append(SourceFile(file.location, file.relative, row.label, split=row.split,
                                               subject=row.subject, **facts))
        elif not images.has_image_extension(file.relative):
            (result.non_image_files if len(parts) > 1 else result.root_files).append(file.relative)
        elif (labelled := FOLDER_LAYOUTS[result.layout](parts)) is not None:
            label, split = labelled
            _add_from_folder(result, SourceFile(file.location, file.relative, label, split=split, **facts))
        else:
            result.root_files.append(file.relative)
    if table is not None:
        for path in sorted(set(table) - seen):
            result.unusable_rows.append({"source_path": path, "reason": "missing_file",
                                         "detail": f"listed in {labels} but not found under {source} (as a regular "
                                                   "file; links are followed only with ingest.follow_file_links)"})
    _report(root, result, labels)
    return result


def _add_from_folder(result: SourceScan, file: SourceFile) -> None:
    """A file labelled by its class folder's name; quarantined (bad_label) where that name holds a control character."""
    found = label_text.control_character(file.label)
    if found:
        result.unusable_rows.append({"source_path": file.source_path, "reason": "bad_label",
                                     "detail": f"its class folder's name holds {found}; labels must be printable "
                                               "text: rename the folder"})
    else:
        result.files.append(file)


MOST_NAMED = 10  # folders named one by one in the log; the rest are counted


def _report(root: Path, result: SourceScan, labels: Path | None) -> None:
    """Say what was left out and why; a source with no usable image is an error."""
    refused = [row["source_path"] for row in result.unusable_rows if row["reason"] == "bad_label"]
    if refused:
        logger.warning("%d file(s) quarantined (reason bad_label): %s holds a newline or another control character "
                       "(e.g. %r); %s", len(refused), "the label table's label" if labels is not None else
                       "the class folder's name", refused[0], "fix the rows of the table" if labels is not None else
                       "rename the folders")
    if result.layout == "classes":
        present = set(result.labels) | {path.split("/")[0] for path in refused}
        result.empty_class_folders = [folder for folder in _top_folders(root) if folder not in present]
        for folder in result.empty_class_folders[:MOST_NAMED]:
            links = sum(1 for link in result.skipped_links if link.startswith(folder + "/"))
            why = (f"holds only links ({links}), which are not followed; set ingest.follow_file_links: true to "
                   "read a tree of links" if links else "holds no image files")
            logger.warning("%s: class folder %s; it is not a class", root / folder, why)
        if len(result.empty_class_folders) > MOST_NAMED:
            logger.warning("%d more folders under %s hold no image files and are not classes; is ingest.source the "
                           "folder of class folders?", len(result.empty_class_folders) - MOST_NAMED, root)
    # images at the top belong to no class; notes beside the class folders (SOURCE.md, README, LICENSE) are no
    # misplaced images: recorded in the summary, not warned about
    at_root = [file for file in result.root_files if "/" not in file and images.has_image_extension(file)]
    if at_root:
        where = "a class folder" if result.layout == "classes" else "a class folder inside a split folder"
        logger.warning("%d file(s) directly under %s belong to no class and were skipped (e.g. %s); move them into %s",
                       len(at_root), root, at_root[0], where)
    loose = _split_folders_holding_images(result)
    if loose and result.files:  # with no files at all, the error below says it
        logger.warning("%s: %s", root, loose)
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
        if loose:
            where = loose
        elif refused:
            where = (f"every label found under {root} holds a newline or another control character ({len(refused)} "
                     f"file(s), e.g. {refused[0]!r}); labels must be printable text")
        raise ValueError(f"{root}: {where}")


def _split_folders_holding_images(result: SourceScan) -> str:
    """What to do about split folders (train/, test/...) that hold images directly, as class folders would: "" if
    none do. Read as split folders, those images have no class; as classes, they would."""
    if result.layout != "splits":
        return ""
    loose = [file for file in result.root_files if "/" in file]
    if not loose:
        return ""
    folders = sorted({file.split("/")[0] for file in loose})
    listed = ", ".join(f"{folder}/" for folder in folders)
    return (f"{len(loose)} image file(s) lie directly in {listed} (e.g. {loose[0]}), which were read as split "
            f"folders, so they have no class and were skipped. If {listed} are your classes, set "
            f"ingest.layout: classes; if they are splits, put the images in class folders inside them "
            f"({folders[0]}/<label>/<image>)")
