"""tasks/atomic.py: outputs get the modes open() and mkdir() give under the umask, never wider (issue 27 item 4)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tasks import atomic


@pytest.fixture
def private_umask():
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_umask_is_read_without_changing_it(private_umask):
    assert atomic.umask() == 0o077 and atomic.umask() == 0o077


def test_files_and_folders_written_under_a_private_umask_stay_private(tmp_path, private_umask):
    atomic.write_text(tmp_path / "table.csv", "path,label\n")
    atomic.write_json(tmp_path / "record.json", {"a": 1})
    with atomic.atomic_directory(tmp_path / "shards") as building:
        (building / "shard-0.tar").write_bytes(b"x")
    assert _mode(tmp_path / "table.csv") == 0o600
    assert _mode(tmp_path / "record.json") == 0o600
    assert _mode(tmp_path / "shards") == 0o700


def test_a_usual_umask_gives_usual_modes(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "table.csv", "path,label\n")
        with atomic.atomic_directory(tmp_path / "shards"):
            pass
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "table.csv") == 0o644 and _mode(tmp_path / "shards") == 0o755


def test_converted_backbone_weights_stay_within_the_umask(private_umask, tmp_path):
    """Converted backbone weights are written as open() would make them under the umask, not 0644."""
    from tasks.backbones import pretrained

    weights = tmp_path / "cache" / "weights.h5"
    pretrained._write_atomically(weights, lambda path: path.write_bytes(b"weights"), ".h5")
    assert stat.S_IMODE(weights.stat().st_mode) == 0o600
