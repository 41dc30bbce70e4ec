"""The embeddings store: float16 features per image content in write-once shards, read back in the order asked,
compacted when most of a shard's images are gone."""

import hashlib
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from tasks import embedding_store, images


def digests(count: int, start: int = 0) -> list[str]:
    return [hashlib.sha256(str(index).encode()).hexdigest() for index in range(start, start + count)]


def features(count: int, width: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 3, (count, width)).astype(np.float32)


def test_features_come_back_as_float32_at_float16_precision(tmp_path):
    names, values = digests(5), features(5)
    name = embedding_store.write_shard(tmp_path, names, values)
    assert name == "features-000001.parquet"
    assert embedding_store.shard_names(tmp_path) == [name]
    read = embedding_store.read_features(tmp_path, names)
    assert read.dtype == np.float32 and read.shape == (5, 16)
    np.testing.assert_array_equal(read, values.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(read, values, rtol=1e-3, atol=1e-3)
    assert not np.array_equal(read, values)  # stored as float16, not float32


def test_read_features_follows_the_order_asked_not_the_storage_order(tmp_path):
    names, values = digests(6), features(6)
    embedding_store.write_shard(tmp_path, names[:3], values[:3])
    embedding_store.write_shard(tmp_path, names[3:], values[3:])
    order = [4, 0, 5, 2, 1, 3, 0]  # across both shards, backwards, one image twice
    read = embedding_store.read_features(tmp_path, [names[index] for index in order])
    np.testing.assert_array_equal(read, values[order].astype(np.float16).astype(np.float32))
    assert embedding_store.read_features(tmp_path, []).shape[0] == 0


def test_an_image_missing_from_the_store_is_named_with_what_to_run(tmp_path):
    names = digests(4)
    embedding_store.write_shard(tmp_path, names[:3], features(3))
    with pytest.raises(ValueError, match="embed") as raised:
        embedding_store.read_features(tmp_path, [names[0], names[3]])
    message = str(raised.value)
    assert str(tmp_path) in message
    assert names[3][:12] in message and names[0][:12] not in message
    assert "1 of 2" in message
    with pytest.raises(ValueError, match="embed"):  # an empty store (no folder at all) says the same
        embedding_store.read_features(tmp_path / "absent", names[:1])


def test_stored_sha256s_names_the_shard_of_every_image(tmp_path):
    names = digests(5)
    first = embedding_store.write_shard(tmp_path, names[:2], features(2))
    second = embedding_store.write_shard(tmp_path, names[2:], features(3))
    assert (first, second) == ("features-000001.parquet", "features-000002.parquet")
    assert embedding_store.stored_sha256s(tmp_path) == {**dict.fromkeys(names[:2], first),
                                                        **dict.fromkeys(names[2:], second)}
    assert embedding_store.stored_sha256s(tmp_path / "absent") == {}


def test_a_row_count_that_disagrees_with_the_images_is_refused(tmp_path):
    with pytest.raises(ValueError, match="3 images for 2 feature rows"):
        embedding_store.write_shard(tmp_path, digests(3), features(2))
    assert embedding_store.shard_names(tmp_path) == []


def test_compact_copies_the_live_rows_of_a_mostly_dead_shard_and_leaves_a_mostly_live_one(tmp_path):
    names, values = digests(8), features(8)
    sparse = embedding_store.write_shard(tmp_path, names[:4], values[:4])  # 1 of 4 live below: compacted
    dense = embedding_store.write_shard(tmp_path, names[4:], values[4:])  # 3 of 4 live: kept as it is
    os.utime(tmp_path / dense, (1_000_000_000, 1_000_000_000))
    dense_inode = (tmp_path / dense).stat().st_ino
    live = {names[1], *names[4:7]}

    counts = embedding_store.compact(tmp_path, live, {sparse: 4, dense: 4})

    shards = embedding_store.shard_names(tmp_path)
    assert sparse not in shards and dense in shards and len(shards) == 2
    written = next(name for name in shards if name != dense)
    assert counts == {dense: 4, written: 1}
    assert (tmp_path / dense).stat().st_mtime == 1_000_000_000
    assert (tmp_path / dense).stat().st_ino == dense_inode
    assert embedding_store.stored_sha256s(tmp_path) == {names[1]: written, **dict.fromkeys(names[4:], dense)}
    order = sorted(live)
    expected = values[[names.index(digest) for digest in order]].astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(embedding_store.read_features(tmp_path, order), expected)
    assert pq.read_metadata(tmp_path / written).num_rows == 1


def test_compact_removes_a_shard_with_no_live_row_and_leaves_a_store_without_sparse_shards_alone(tmp_path):
    names = digests(4)
    dead = embedding_store.write_shard(tmp_path, names[:2], features(2))
    kept = embedding_store.write_shard(tmp_path, names[2:], features(2))
    records = {dead: 2, kept: 2}
    assert embedding_store.compact(tmp_path, set(names), records) == records  # everything live: nothing to do
    assert embedding_store.shard_names(tmp_path) == [dead, kept]
    counts = embedding_store.compact(tmp_path, {names[2]}, records)  # half of `kept` live: not under 0.5
    assert counts == {kept: 2}
    assert embedding_store.shard_names(tmp_path) == [kept]


def test_remove_refuses_a_name_that_is_not_a_shard(tmp_path):
    shard = embedding_store.write_shard(tmp_path, digests(1), features(1))
    (tmp_path / "embeddings.json").write_text("{}")
    for name in ("embeddings.json", "features-1.parquet", "../features-000001.parquet", f"{shard}.bak"):
        with pytest.raises(ValueError, match="not a features shard"):
            embedding_store.remove(tmp_path, [name])
    assert (tmp_path / "embeddings.json").is_file() and (tmp_path / shard).is_file()
    embedding_store.remove(tmp_path, [shard, "features-000099.parquet"])  # an absent shard is no error
    assert embedding_store.shard_names(tmp_path) == []


def test_remove_temporary_deletes_what_a_killed_run_left(tmp_path):
    shard = embedding_store.write_shard(tmp_path, digests(1), features(1))
    (tmp_path / ".features-000002.parquet.partial").write_bytes(b"half a shard")
    (tmp_path / ".embeddings.json.abc.partial").write_text("{")
    embedding_store.remove_temporary(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [".embeddings.json.abc.partial", shard]
    embedding_store.remove_temporary(tmp_path / "absent")  # no folder: nothing to do


def test_summary_round_trip_and_an_unreadable_summary_reads_as_empty(tmp_path):
    summary = {"settings": embedding_store.settings("lite0@abc/v1", 224, "crop"),
               "shards": {"features-000001.parquet": 3}}
    embedding_store.write_summary(tmp_path, summary)
    assert embedding_store.read_summary(tmp_path) == summary
    (tmp_path / embedding_store.SUMMARY_FILE).write_text("{not json")
    assert embedding_store.read_summary(tmp_path) == {}
    (tmp_path / embedding_store.SUMMARY_FILE).write_text("[1, 2]")
    assert embedding_store.read_summary(tmp_path) == {}
    assert embedding_store.read_summary(tmp_path / "absent") == {}


def test_settings_name_everything_a_feature_depends_on_besides_the_image(monkeypatch):
    settings = embedding_store.settings("efficientnet_lite0@579344248a93/v1", 224, "crop")
    assert settings == {"weights": "efficientnet_lite0@579344248a93/v1", "image_size": 224, "resize": "crop",
                        "decoder": images.DECODE_VERSION}
    monkeypatch.setattr(images, "DECODE_VERSION", images.DECODE_VERSION + 1)
    assert embedding_store.settings("efficientnet_lite0@579344248a93/v1", 224, "crop") != settings


def test_an_image_costs_under_5_kib_for_1280_features(tmp_path):
    count = 64
    name = embedding_store.write_shard(tmp_path, digests(count), features(count, width=1280))
    assert (tmp_path / name).stat().st_size / count < 5 * 1024
    assert embedding_store.read_features(tmp_path, digests(1)).shape == (1, 1280)
