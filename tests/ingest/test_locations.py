"""The raw store's locations during a run: the last manifest's as columns, this run's in a dict, one answer."""

import pandas as pd
import pytest

from tasks import raw_store
from tasks.ingest.locations import Locations


def _table() -> pd.DataFrame:
    return pd.DataFrame({"sha256": [f"{index:064x}" for index in range(6)],
                         "shard": ["shard-000001.tar"] * 3 + ["shard-000002.tar"] * 3,
                         "offset": [0, 1024, 2048, 0, 1536, 4096], "bytes": [100, 600, 700, 1000, 2000, 10]})


def test_locations_answer_one_image_and_whole_columns_alike():
    locations = Locations(_table())
    first = f"{0:064x}"
    assert first in locations and f"{99:064x}" not in locations and "short" not in locations
    assert locations[f"{4:064x}"] == raw_store.Location("shard-000002.tar", 1536, 2000, f"{4:064x}")
    with pytest.raises(KeyError):
        locations[f"{99:064x}"]
    added = raw_store.Location("shard-000003.tar", 0, 50, f"{99:064x}")
    locations[f"{99:064x}"] = added
    assert locations.setdefault(f"{99:064x}", raw_store.Location("other.tar", 0, 1)) == added
    assert locations.setdefault(first, raw_store.Location("other.tar", 0, 1)).shard == "shard-000001.tar"
    assert len(locations) == 7 and sorted(locations)[-1] == f"{99:064x}"

    hashes = pd.Series([f"{99:064x}", f"{5:064x}", "missing"])
    assert locations.contain(hashes).tolist() == [True, True, False]
    columns = locations.columns(hashes[:2])
    assert columns["shard"].tolist() == ["shard-000003.tar", "shard-000002.tar"]
    assert columns["offset"].tolist() == [0, 4096]
    with pytest.raises(KeyError, match="missing"):
        locations.columns(hashes)
    ends = locations.ends()  # as raw_store.end_of computes it from each shard's locations
    for shard, least in ends.items():
        held = [location for location in map(locations.__getitem__, locations) if location.shard == shard]
        assert least == raw_store.end_of(held) and sorted(locations.in_shard(shard)) == sorted(held)

    assert locations.forget({"shard-000002.tar", "shard-000003.tar"}) == {f"{index:064x}" for index in (3, 4, 5, 99)}
    assert f"{4:064x}" not in locations and f"{99:064x}" not in locations and first in locations
    assert list(locations.ends().index) == ["shard-000001.tar"]
    assert "x" not in Locations() and not Locations().contain(pd.Series(["x"])).any()
