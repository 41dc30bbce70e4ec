"""Content hashes of files, read in blocks so that a large file never sits in memory; writes only an optional copy."""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK_BYTES = 1 << 20


def file_sha256(path: Path, copy_to: Path | None = None) -> str:
    """The hex sha256 of a file's bytes; with `copy_to`, the bytes read are written there too (its folder is made
    when missing), so the copy is exactly what was hashed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        copy = None
        if copy_to is not None:
            copy_to.parent.mkdir(parents=True, exist_ok=True)
            copy = copy_to.open("wb")
        try:
            for block in iter(lambda: handle.read(BLOCK_BYTES), b""):
                digest.update(block)
                if copy is not None:
                    copy.write(block)
        finally:
            if copy is not None:
                copy.close()
    return digest.hexdigest()
