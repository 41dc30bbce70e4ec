"""Turns an I/O error of the machine (disk full, read-only, I/O error, out of file handles) into a message that says
which path, what happened there and what to do; reads only the free space of a file system, writes nothing."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks import images


class MachineError(RuntimeError):
    """The machine's trouble, not a file's: the run stops, keeping what it had finished."""


def _free_space(path: Path) -> str:
    for folder in (path, *path.parents):
        try:
            return f"{shutil.disk_usage(folder).free / 1e6:,.1f} MB free now"
        except OSError:
            continue
    return "free space unknown"


def describe(error: OSError, path: Path, doing: str, elsewhere: str, again: str) -> MachineError:
    """A MachineError for `error` met while `doing` (e.g. "writing") `path`.

    `elsewhere` says how to put the output somewhere else (e.g. "choose another `out`"); `again` what running again
    does (e.g. "the chunks already finished are kept").
    """
    cause = error.strerror or os.strerror(error.errno or 0)
    folder = path if path.is_dir() else path.parent
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        what = f"the file system of {folder} is full ({_free_space(folder)}); free some space there or {elsewhere}"
    elif error.errno == errno.EROFS:
        what = f"the file system of {folder} is read-only; {elsewhere}"
    elif error.errno in (errno.EMFILE, errno.ENFILE):
        what = "too many open files on this machine; raise the limit (ulimit -n) or stop other jobs"
    elif error.errno == errno.ENOMEM:
        what = "the machine is out of memory; stop other jobs"
    else:
        what = f"an I/O error of the disk under {folder}; check the disk (dmesg)"
    return MachineError(f"{path}: {doing} failed: {cause} [{errno.errorcode.get(error.errno or 0, '?')}]: {what}; "
                        f"then run the same command again ({again})")


def is_machine_error(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in images.MACHINE_ERRORS


@contextmanager
def stops_on_machine_errors(path: Path, doing: str, elsewhere: str, again: str) -> Iterator[None]:
    """Raise describe(...) for an error of the machine inside the block (other errors pass through)."""
    try:
        yield
    except OSError as error:
        if not is_machine_error(error):
            raise
        where = Path(error.filename) if isinstance(error.filename, str) and error.filename else path
        raise describe(error, where, doing, elsewhere, again) from error
