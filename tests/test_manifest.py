"""The manifest's compact file form: what it leaves out is rebuilt on reading, and old manifests read the same."""

import pandas as pd
import pytest

from tasks import manifest


def _table() -> pd.DataFrame:
    return pd.DataFrame({"path": ["a/1.png", "a/2.png", "b/3.png"], "label": ["a", "a", "b"],
                         "sha256": ["1" * 64, "2" * 64, "3" * 64], "group": ["1" * 64, "1" * 64, "3" * 64],
                         "source_path": ["a/1.png", "a/2.png", "b/3.png"]})


def test_self_groups_and_the_source_path_are_not_stored_but_read_back(tmp_path):
    table = _table()
    manifest.write(tmp_path / "manifest.parquet", table)
    on_disk = pd.read_parquet(tmp_path / "manifest.parquet")
    assert "source_path" not in on_disk.columns
    assert on_disk["group"].tolist() == ["", "1" * 64, ""]  # only a real near-duplicate group is stored
    assert manifest.read(tmp_path / "manifest.parquet").equals(table)


def test_a_manifest_written_in_full_reads_the_same(tmp_path):
    _table().to_parquet(tmp_path / "old.parquet", index=False)
    assert manifest.read(tmp_path / "old.parquet").equals(_table())


def test_a_source_path_other_than_the_path_is_refused(tmp_path):
    with pytest.raises(ValueError, match="source_path"):
        manifest.write(tmp_path / "manifest.parquet", _table().assign(source_path=["x", "y", "z"]))


def test_a_few_columns_are_read_with_the_group_rebuilt(tmp_path):
    manifest.write(tmp_path / "manifest.parquet", _table())
    table = manifest.read(tmp_path / "manifest.parquet", columns=["path", "group", "split"])
    assert list(table.columns) == ["path", "sha256", "group"]  # no split stored: left out; sha256 rebuilds group
    assert table["group"].tolist() == _table()["group"].tolist()
