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


def test_a_temporary_name_may_end_as_its_writer_insists_and_the_output_stays_within_the_umask(private_umask,
                                                                                              tmp_path):
    """How the converted backbone weights are written (Keras saves weights only to a name ending in .weights.h5)."""
    weights = tmp_path / "cache" / "weights.h5"
    with atomic.atomic_path(weights, suffix=".partial.weights.h5") as temporary:
        assert temporary.name.endswith(".weights.h5")
        temporary.write_bytes(b"weights")
    assert weights.read_bytes() == b"weights" and _mode(weights) == 0o600
    assert [path.name for path in weights.parent.iterdir()] == ["weights.h5"]
