"""Damaged shards are rebuilt by the next ingest: cut short, deleted (with DVC's cache object), or changed in place;
what the source no longer has is named; shards stay read-only and a linked shard is never written."""

import hashlib
import json
import logging
import os
import shutil
import stat

import pytest
import yaml

from tasks import dvc_outputs, raw_store, stored_images
from tasks.config import load_config
from tasks.ingest import stage as ingest
from tasks.paths import Paths
from tests.conftest import PROJECT_ROOT, write_class_folders


def stored_bytes(paths: Paths, manifest) -> list[bytes]:
    with raw_store.Reader(paths.raw) as reader:
        return [reader.read(raw_store.location_of(row)) for row in manifest.itertuples()]


@pytest.fixture
def two_shards(tmp_path):
    """A project whose raw store holds two shards: 12 images from a first run, 24 more from a second."""
    source = write_class_folders(tmp_path / "source", per_class=4)
    config, _ = load_config(PROJECT_ROOT / "params.yaml",
                            overrides={"ingest.source": str(source), "ingest.workers": 1})
    paths = Paths(config.paths, tmp_path / "project")
    ingest.run(config.ingest, paths)
    write_class_folders(source, per_class=12)
    manifest = ingest.run(config.ingest, paths)
    assert raw_store.shard_names(paths.raw) == ["shard-000001.tar", "shard-000002.tar"] and len(manifest) == 36
    return config, paths, source, manifest


def _whole(paths, source, manifest) -> None:
    assert stored_bytes(paths, manifest) == [(source / path).read_bytes() for path in manifest["source_path"]]


def _writable(path) -> None:
    os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR)


def test_a_truncated_shard_is_rebuilt_by_the_next_run_with_a_warning(two_shards, caplog):
    config, paths, source, before = two_shards
    second = os.stat(paths.raw / "shard-000002.tar").st_ino
    shard = paths.raw / "shard-000001.tar"
    _writable(shard)
    os.truncate(shard, os.path.getsize(shard) // 2)

    with caplog.at_level(logging.WARNING):
        manifest = ingest.run(config.ingest, paths)

    assert "shard-000001.tar: damaged" in caplog.text and "12 image(s) of 1 damaged shard(s) rebuilt" in caplog.text
    assert len(manifest) == 36 and sorted(manifest["source_path"]) == sorted(before["source_path"])
    _whole(paths, source, manifest)
    assert set(manifest["shard"]) == set(raw_store.shard_names(paths.raw))
    assert "shard-000001.tar" not in set(manifest["shard"])  # rebuilt into a new shard; the damaged one is gone
    assert os.stat(paths.raw / "shard-000002.tar").st_ino == second  # the sound shard is left alone
    assert ingest.run(config.ingest, paths).equals(manifest)  # and the next run has nothing to do


def test_a_deleted_shard_is_rebuilt(two_shards):
    config, paths, source, before = two_shards
    (paths.raw / "shard-000002.tar").unlink()
    manifest = ingest.run(config.ingest, paths)
    assert len(manifest) == 36
    _whole(paths, source, manifest)


def test_an_image_whose_source_file_is_gone_is_named_as_not_rebuildable(two_shards, caplog):
    config, paths, source, before = two_shards
    lost = before[before["shard"] == "shard-000001.tar"]["source_path"].iloc[0]
    (source / lost).unlink()
    (paths.raw / "shard-000001.tar").unlink()

    with caplog.at_level(logging.WARNING):
        manifest = ingest.run(config.ingest, paths)

    assert "1 image(s) used before cannot be rebuilt" in caplog.text and lost in caplog.text
    assert len(manifest) == 35 and lost not in set(manifest["source_path"])
    _whole(paths, source, manifest)


def test_a_shard_changed_in_place_fails_its_reader_and_is_rebuilt_by_the_next_run(two_shards):
    config, paths, source, before = two_shards
    row = next(before[before["shard"] == "shard-000001.tar"].itertuples())
    shard = paths.raw / "shard-000001.tar"
    _writable(shard)
    with open(shard, "r+b") as handle:  # same size, other bytes: only the sha256 tells
        handle.seek(row.offset)
        reversed_bytes = bytes(reversed(handle.read(row.bytes)))
        handle.seek(row.offset)
        handle.write(reversed_bytes)
    decoder = stored_images.Decoder(paths.raw, 8, "stretch", 10**6)
    with pytest.raises(raw_store.DamagedShard, match="shard-000001.tar"):
        decoder(stored_images.jobs_for(paths.manifest, [row.path])[0])

    manifest = ingest.run(config.ingest, paths)

    assert len(manifest) == 36 and "shard-000001.tar" not in set(manifest["shard"])
    _whole(paths, source, manifest)
    assert decoder(stored_images.jobs_for(paths.manifest, [row.path])[0]).shape == (8, 8, 3)


def test_a_shard_copied_by_a_checkout_is_checked_once_and_kept(two_shards):
    config, paths, source, before = two_shards
    shard = paths.raw / "shard-000001.tar"
    shutil.copy(shard, shard.with_name("copy"))
    os.replace(shard.with_name("copy"), shard)  # newer than the manifest, same bytes
    assert ingest.run(config.ingest, paths).equals(before)
    assert os.stat(shard).st_mtime_ns <= os.stat(paths.manifest).st_mtime_ns  # checked: not read again next time


def _commit_to_cache(root, raw) -> dict[str, str]:
    """What `dvc commit` does to data/raw: its files hard-linked into the cache, a .dir listing, dvc.lock naming it."""
    cache = root / ".dvc" / "cache" / "files" / "md5"
    listing, objects = [], {}
    for name in sorted(os.listdir(raw)):
        md5 = hashlib.md5((raw / name).read_bytes()).hexdigest()
        (cache / md5[:2]).mkdir(parents=True, exist_ok=True)
        os.link(raw / name, cache / md5[:2] / md5[2:])
        listing.append({"md5": md5, "relpath": name})
        objects[name] = str(cache / md5[:2] / md5[2:])
    text = json.dumps(listing).encode()
    listing_md5 = hashlib.md5(text).hexdigest() + ".dir"
    (cache / listing_md5[:2]).mkdir(parents=True, exist_ok=True)
    (cache / listing_md5[:2] / listing_md5[2:]).write_bytes(text)
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"ingest": {"outs": [
        {"path": "data/raw", "hash": "md5", "md5": listing_md5}]}}}))
    return objects


def test_a_shard_deleted_with_its_cache_object_is_rebuilt_and_the_others_linked_back(two_shards):
    config, paths, source, before = two_shards
    objects = _commit_to_cache(paths.root, paths.raw)
    os.unlink(objects["shard-000001.tar"])
    shutil.rmtree(paths.raw)  # as DVC does before running the stage

    manifest = ingest.run(config.ingest, paths)

    assert paths.raw.is_dir() and len(manifest) == 36
    _whole(paths, source, manifest)
    assert os.path.samefile(paths.raw / "shard-000002.tar", objects["shard-000002.tar"])  # linked back, not rebuilt


def test_a_truncated_cache_object_is_removed_from_the_cache_so_no_restore_brings_it_back(two_shards):
    config, paths, source, before = two_shards
    objects = _commit_to_cache(paths.root, paths.raw)
    shard = paths.raw / "shard-000001.tar"
    _writable(shard)
    os.truncate(shard, 700)  # in place: the cache object is the same file

    ingest.run(config.ingest, paths)

    assert not os.path.exists(objects["shard-000001.tar"]) and os.path.exists(objects["shard-000002.tar"])


def test_shards_are_read_only_and_a_shard_linked_elsewhere_is_never_written(two_shards, tmp_path):
    config, paths, source, before = two_shards
    for name in raw_store.shard_names(paths.raw):
        assert not os.stat(paths.raw / name).st_mode & 0o222
    linked = tmp_path / "cache-object"
    os.link(paths.raw / "shard-000002.tar", linked)
    kept = linked.read_bytes()
    write_class_folders(source, per_class=16)  # 12 new images: a new shard

    manifest = ingest.run(config.ingest, paths)

    assert len(manifest) == 48 and linked.read_bytes() == kept
    assert os.path.samefile(linked, paths.raw / "shard-000002.tar")
    assert raw_store.shard_names(paths.raw) == ["shard-000001.tar", "shard-000002.tar", "shard-000003.tar"]


def test_discard_removes_only_a_cache_object_that_is_the_same_file(tmp_path):
    root = tmp_path / "project"
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "shard-000001.tar").write_bytes(b"one")
    (raw / "shard-000002.tar").write_bytes(b"two")
    objects = _commit_to_cache(root, raw)
    (raw / "shard-000002.tar").unlink()
    (raw / "shard-000002.tar").write_bytes(b"two")  # a copy: its cache object is another file
    assert dvc_outputs.discard(root, "ingest", raw, ["shard-000001.tar", "shard-000002.tar"]) == ["shard-000001.tar"]
    assert not os.path.exists(objects["shard-000001.tar"]) and os.path.exists(objects["shard-000002.tar"])
