"""Writes output files and folders under a temporary name, then renames them into place, so none is ever half-written."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported by its callers: the commands that only move folders start without pandas
    import pandas as pd


def umask() -> int:
    """The process's umask, read without changing it where Linux tells (/proc), else set and put back at once.

    Outputs get the modes that open() and mkdir() would give them, never wider: a user who keeps a private umask
    keeps private shards, tables and models.
    """
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o077)
    os.umask(current)
    return current


@contextmanager
def atomic_path(path: Path, keep_if_same: bool = False, suffix: str = ".partial") -> Iterator[Path]:
    """Yield a temporary file path beside `path`; on success it replaces `path`, on error it is removed.

    With `keep_if_same`, a `path` that already holds exactly the new bytes is left untouched (its modification time
    too), so that tools comparing files (DVC, make) see no change. `suffix` ends the temporary name, for writers
    that insist on one (Keras saves weights only to a name ending in .weights.h5).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(descriptor)
    temporary = Path(temporary_name)
    try:
        yield temporary
        if keep_if_same and path.is_file() and filecmp.cmp(temporary, path, shallow=False):
            return
        os.chmod(temporary, 0o666 & ~umask())  # mkstemp makes files private; outputs are as open() makes them
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: Path, text: str, keep_if_same: bool = False) -> None:
    with atomic_path(path, keep_if_same) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: Path, value: Any, keep_if_same: bool = False) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n", keep_if_same)


def write_parquet(path: Path, table: pd.DataFrame, keep_if_same: bool = False) -> None:
    with atomic_path(path, keep_if_same) as temporary:
        table.to_parquet(temporary, index=False, engine="pyarrow", compression="zstd")


def write_csv(path: Path, table: pd.DataFrame, keep_if_same: bool = False) -> None:
    with atomic_path(path, keep_if_same) as temporary:
        table.to_csv(temporary, index=False)


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it replaces the whole of `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield temporary
        os.chmod(temporary, 0o777 & ~umask())  # mkdtemp makes folders private; outputs are as mkdir makes them
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(temporary, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
