"""Copies (or hard-links) each classified file into DIR/<label>/<path>: reads a predictions table and the source folder, writes DIR.

Nothing is ever written outside DIR: every folder below it is opened without following links (a link at DIR/4 is
refused, not written through: tasks/safe_open.py), whatever already has a target's name (a different file, a
link, dangling or not) is left alone, and each file is written under a short temporary name, then linked to its
name, which never replaces anything. A file that cannot be placed (a link or a file where a folder should be, a label
or name the file system refuses) is counted with its reason and the next one goes on: nothing stops the later copies.
Names are taken from the table's `path_bytes_hex`, so names that are not UTF-8 are placed exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from tasks import atomic, csv_cells, images, safe_open
from tasks.config import ArgumentError
from tasks.predict import machine, store

logger = logging.getLogger(__name__)

_COLUMNS = ["path", "path_bytes_hex", "status", "label", "sha256"]
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Problem:
    files: int  # how many files it kept from their place
    example: str  # the first one's path


@dataclass
class CopySummary:
    destination: str
    placed: int = 0  # copied or linked now
    already_there: int = 0  # the same bytes were there from an earlier run
    conflict: int = 0  # something else has that name (a different file, a link, a folder): left alone
    changed: int = 0  # gone or changed since it was classified: not placed
    refused: int = 0  # cannot be placed (a link in the way, a name or label the file system refuses): see problems
    examples: dict[str, str] = field(default_factory=dict)  # the first path of each outcome
    problems: dict[str, Problem] = field(default_factory=dict)  # why files were refused or left alone

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _NotPlaced(Exception):
    """One file cannot be placed: `outcome` refused or conflict, and the problem (one line, shared by many files)."""

    def __init__(self, outcome: str, problem: str) -> None:
        super().__init__(problem)
        self.outcome = outcome
        self.problem = problem


def _ok_rows(table: Path) -> Iterator[tuple[str, bytes, str, str]]:
    """(path, exact path, label, sha256) of every ok row, read a batch at a time."""
    if store.output_format(table) == "parquet":
        batches = (batch.to_pylist() for batch in pq.ParquetFile(table).iter_batches(8192, columns=_COLUMNS))
    else:
        batches = (csv_cells.exact_table(chunk).to_dict("records")  # as written, before the spreadsheet escapes
                   for chunk in pd.read_csv(table, chunksize=8192, dtype=str, keep_default_na=False, usecols=_COLUMNS))
    for batch in batches:
        for row in batch:
            if row["status"] == "ok":
                yield row["path"], bytes.fromhex(row["path_bytes_hex"]), row["label"], row["sha256"]


def _label_problem(label: str) -> str | None:
    """Why `label` cannot be a folder name, if it cannot."""
    if label in ("", ".", "..") or "/" in label or "\0" in label or label.startswith("."):
        return f"label {label!r} cannot be a folder name"
    if len(os.fsencode(label)) > 255:
        return f"label {label[:40]!r}... is {len(os.fsencode(label))} bytes, longer than a folder name can be (255)"
    return None


def _target_names(label: str, relative: bytes) -> tuple[str, ...]:
    problem = _label_problem(label)
    if problem:
        raise _NotPlaced("refused", f"{problem}; rename it in the model's labels.json, or classify without "
                                    "`copy_into`")
    try:
        return (label, *safe_open.split(relative))
    except ValueError as error:
        raise _NotPlaced("refused", f"the table's path {error}") from None


def _existing(folder: int, name: str, sha256: str) -> str:
    """What is at `name` already: already_there (the same bytes), or _NotPlaced conflict; FileNotFoundError if free."""
    found = os.stat(name, dir_fd=folder, follow_symlinks=False)
    if stat.S_ISLNK(found.st_mode):
        raise _NotPlaced("conflict", "a symbolic link has the name (not followed, left alone)")
    if not stat.S_ISREG(found.st_mode):
        raise _NotPlaced("conflict", "a folder or special file has the name (left alone)")
    try:
        same = hashlib.sha256(images.read_file(name, dir_fd=folder)).hexdigest() == sha256
    except images.ImageError as error:  # swapped meanwhile
        raise _NotPlaced("conflict", f"another file has the name ({error.detail})") from None
    if not same:
        raise _NotPlaced("conflict", "a different file has the name (left alone, nothing overwritten)")
    return "already_there"


def _write_temporary(file: Path, sha256: str, folder: int, link: bool) -> str | None:
    """The verified bytes of `file` under a new temporary name in `folder`; None if they are not `sha256`'s."""
    temporary = f".imgpipe-copy-{secrets.token_hex(6)}.partial"
    if link:
        try:
            os.link(file, temporary, dst_dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as error:
            if machine.is_machine_error(error):
                raise
            raise ArgumentError(f"`link`: cannot hard-link {file} into the target ({error.strerror}); copy instead "
                                "(leave out `link`)") from None
        try:
            same = hashlib.sha256(images.read_file(temporary, dir_fd=folder)).hexdigest() == sha256
        except images.ImageError:  # a link or FIFO swapped in is not followed
            same = False
        if not same:
            os.unlink(temporary, dir_fd=folder)
            return None
        return temporary
    try:
        source_stat = os.stat(file, follow_symlinks=False)
        data = images.read_file(file)
    except (images.ImageError, FileNotFoundError):
        return None
    if hashlib.sha256(data).hexdigest() != sha256:
        return None
    with os.fdopen(os.open(temporary, _CREATE, 0o644, dir_fd=folder), "wb") as handle:
        try:
            handle.write(data)
            handle.flush()
            # the source's mode, never wider than the umask (a copy is no more readable than either allows)
            os.fchmod(handle.fileno(), stat.S_IMODE(source_stat.st_mode) & ~atomic.umask())
            os.utime(handle.fileno(), ns=(source_stat.st_atime_ns, source_stat.st_mtime_ns))
        except BaseException:
            os.unlink(temporary, dir_fd=folder)  # a disk-full copy is not left taking space
            raise
    return temporary


def _place(file: Path, sha256: str, names: tuple[str, ...], target: safe_open.Folders, link: bool) -> str:
    """Put `file` at DIR/names without replacing anything; return placed, already_there or changed."""
    try:
        folder = target.open(names[:-1])
    except safe_open.FolderError as error:
        advice = "; nothing is written through it: remove it, or choose another `copy_into`" if error.reason in (
            "link", "not_a_folder") else ""
        raise _NotPlaced("refused", f"{error.folder}: {error.detail}{advice}") from None
    name = names[-1]
    try:
        return _existing(folder, name, sha256)
    except FileNotFoundError:
        pass
    temporary = _write_temporary(file, sha256, folder, link)
    if temporary is None:
        return "changed"
    try:
        os.link(temporary, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)  # never replaces
        return "placed"
    except FileExistsError:  # appeared meanwhile
        return _existing(folder, name, sha256)
    finally:
        os.unlink(temporary, dir_fd=folder)


def _source_file(source: Path, relative: bytes) -> Path | None:
    """Where the classified file is now (a link inside the tree at its target), or None if it is gone or out."""
    file = Path(os.path.realpath(source / os.fsdecode(relative)))
    return file if file.is_relative_to(source) else None


def copy_into(table: Path, source: Path, destination: Path, link: bool = False) -> CopySummary:
    """Place every ok file of `table` (classified under `source`) into destination/<label>/<path>."""
    source, destination = source.resolve(), destination.resolve()
    if destination == source or destination.is_relative_to(source):
        raise ArgumentError(f"`copy_into` {destination} is inside the classified folder {source}; choose a folder "
                            "outside it, or the copies would be classified on the next run")
    summary = CopySummary(str(destination))
    stopping = machine.stops_on_machine_errors(destination, "copying into", "choose another `copy_into`",
                                               "the files already placed are recognised and kept")
    with stopping, contextlib.ExitStack() as stack:
        try:
            target = stack.enter_context(safe_open.Folders(destination, create=True))
        except safe_open.FolderError as error:
            raise ArgumentError(f"`copy_into` {error}") from None
        for path, relative, label, sha256 in _ok_rows(table):
            try:
                file = _source_file(source, relative)
                names = _target_names(label, relative)
                outcome = "changed" if file is None else _place(file, sha256, names, target, link)
            except _NotPlaced as not_placed:
                outcome, problem = not_placed.outcome, not_placed.problem
            except OSError as error:  # the file system refuses a name (too long for it, say), or permission
                if machine.is_machine_error(error):
                    raise
                outcome, problem = "refused", f"cannot write into {destination}: {error.strerror or error}"
            else:
                problem = ""
            if problem:
                summary.problems.setdefault(problem, Problem(0, path)).files += 1
            setattr(summary, outcome, getattr(summary, outcome) + 1)
            summary.examples.setdefault(outcome, path)
    _log(summary, link)
    return summary


def _log(summary: CopySummary, link: bool) -> None:
    logger.info("copy-into: %d file(s) %s into %s, %d already there", summary.placed, "linked" if link else "copied",
                summary.destination, summary.already_there)
    for problem, found in summary.problems.items():
        logger.warning("copy-into: %d file(s) not placed (e.g. %s): %s", found.files, found.example, problem)
    if summary.changed:
        logger.warning("copy-into: %d file(s) gone or changed since they were classified (e.g. %s); run predict "
                       "again to classify them", summary.changed, summary.examples["changed"])
