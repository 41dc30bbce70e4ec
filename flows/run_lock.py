"""One run at a time per repository: a lock file under .dvc/tmp/ that a second run waits on, up to a timeout."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock


class WorkspaceBusy(RuntimeError):
    """Another imgpipe run holds this repository's lock."""


def lock_path(root: Path) -> Path:
    return root / ".dvc" / "tmp" / "imgpipe-run.lock"


@contextmanager
def workspace_lock(root: Path, timeout: float) -> Iterator[None]:
    """Hold the repository's run lock; wait up to `timeout` seconds for it (0: do not wait), else WorkspaceBusy.

    The operating system releases the lock when its holder dies, so a killed run never blocks the next one.
    """
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(path))
    try:
        lock.acquire(timeout=timeout)
    except filelock.Timeout:
        raise WorkspaceBusy(
            f"another imgpipe run is using {root} (lock {path}); this run did nothing. "
            f"Let it finish, or wait for it with --lock-timeout SECONDS"
        ) from None
    try:
        yield
    finally:
        lock.release()
