"""Copies (or hard-links) each classified file into DIR/<label>/<path>: reads a predictions table and the source folder, writes DIR."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tasks.config import ArgumentError
from tasks.predict import store
from tasks.hashing import file_sha256

logger = logging.getLogger(__name__)


@dataclass
class CopySummary:
    destination: str
    placed: int = 0  # copied or linked now
    already_there: int = 0  # the same bytes were there from an earlier run
    conflict: int = 0  # a different file has that name: left alone
    changed: int = 0  # gone or changed since it was classified: not placed
    examples: dict[str, str] = field(default_factory=dict)  # the first path of each problem

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ok_rows(table: Path) -> Iterator[tuple[str, str, str]]:
    """(path, label, sha256) of every ok row, read a batch at a time."""
    if store.output_format(table) == "parquet":
        parquet = pq.ParquetFile(table)
        for batch in parquet.iter_batches(8192, columns=["path", "status", "label", "sha256"]):
            for row in batch.to_pylist():
                if row["status"] == "ok":
                    yield row["path"], row["label"], row["sha256"]
        return
    import pandas as pd

    for chunk in pd.read_csv(table, chunksize=8192, dtype=str, keep_default_na=False,
                             usecols=["path", "status", "label", "sha256"]):
        for row in chunk[chunk["status"] == "ok"].itertuples(index=False):
            yield row.path, row.label, row.sha256


def _safe_folder_name(label: str) -> str:
    if label in ("", ".", "..") or "/" in label or "\0" in label or label.startswith("."):
        raise ArgumentError(f"label {label!r} cannot be a folder name; rename it in the model's labels.json "
                            "or classify without `copy_into`")
    return label


def _place(file: Path, target: Path, sha256: str, link: bool) -> str:
    """Put `file` at `target` without replacing anything there; return placed, already_there, conflict or changed."""
    if target.exists():
        return "already_there" if file_sha256(target) == sha256 else "conflict"
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        temporary.unlink()
        if link:
            try:
                os.link(file, temporary)
            except OSError as error:  # another file system, or links not allowed there
                raise ArgumentError(f"`link`: cannot hard-link {file} into {target.parent} ({error.strerror}); "
                                    "copy instead (leave out `link`)") from None
        else:
            shutil.copy2(file, temporary)
        if file_sha256(temporary) != sha256:
            return "changed"
        try:
            os.link(temporary, target)  # unlike a rename, never replaces a file that appeared meanwhile
        except FileExistsError:
            return "already_there" if file_sha256(target) == sha256 else "conflict"
        return "placed"
    finally:
        temporary.unlink(missing_ok=True)


def copy_into(table: Path, source: Path, destination: Path, link: bool = False) -> CopySummary:
    """Place every ok file of `table` (classified under `source`) into destination/<label>/<path>."""
    source, destination = source.resolve(), destination.resolve()
    if destination == source or destination.is_relative_to(source):
        raise ArgumentError(f"`copy_into` {destination} is inside the classified folder {source}; choose a folder "
                            "outside it, or the copies would be classified on the next run")
    summary = CopySummary(str(destination))
    for relative, label, sha256 in _ok_rows(table):
        file = (source / relative).resolve()
        if file.is_relative_to(source) and file.is_file():
            outcome = _place(file, destination / _safe_folder_name(label) / relative, sha256, link)
        else:
            outcome = "changed"
        setattr(summary, outcome, getattr(summary, outcome) + 1)
        summary.examples.setdefault(outcome, relative)
    logger.info("copy-into: %d file(s) %s into %s, %d already there", summary.placed, "linked" if link else "copied",
                destination, summary.already_there)
    if summary.conflict:
        logger.warning("copy-into: %d file(s) not placed because a different file has the name (e.g. %s); "
                       "nothing was overwritten", summary.conflict, summary.examples["conflict"])
    if summary.changed:
        logger.warning("copy-into: %d file(s) gone or changed since they were classified (e.g. %s); run predict "
                       "again to classify them", summary.changed, summary.examples["changed"])
    return summary
