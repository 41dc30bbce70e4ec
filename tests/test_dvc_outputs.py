"""Linking a stage's last outputs back from DVC's cache (instead of DVC's persist, which copies them every run)."""

import hashlib
import json
import os

import yaml

from tasks import dvc_outputs


def put(cache, data: bytes) -> str:
    md5 = hashlib.md5(data).hexdigest()
    path = cache / "files" / "md5" / md5[:2] / md5[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return md5


def project(tmp_path, cache_dir=None):
    root = tmp_path / "project"
    (root / ".dvc").mkdir(parents=True)
    cache = root / ".dvc" / "cache"
    if cache_dir is not None:
        (root / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {cache_dir}\n")
        cache = cache_dir
    shards = {"shard-000001.tar": b"first shard", "shard-000002.tar": b"second shard"}
    listing = [{"md5": put(cache, data), "relpath": name} for name, data in shards.items()]
    listing_md5 = put(cache, json.dumps(listing).encode()) + ".dir"
    (cache / "files" / "md5" / listing_md5[:2] / listing_md5[2:-4]).rename(
        cache / "files" / "md5" / listing_md5[:2] / listing_md5[2:])
    manifest_md5 = put(cache, b"manifest")
    (root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"ingest": {"outs": [
        {"path": "data/raw", "hash": "md5", "md5": listing_md5},
        {"path": "data/interim/manifest.parquet", "hash": "md5", "md5": manifest_md5}]}}}))
    return root, cache


def test_missing_outputs_come_back_as_the_very_cached_files(tmp_path):
    root, cache = project(tmp_path)
    raw, manifest = root / "data" / "raw", root / "data" / "interim" / "manifest.parquet"
    assert dvc_outputs.restore(root, "ingest", [raw, manifest]) == [raw, manifest]
    assert sorted(os.listdir(raw)) == ["shard-000001.tar", "shard-000002.tar"]
    assert (raw / "shard-000002.tar").read_bytes() == b"second shard"
    cached = cache / "files" / "md5" / hashlib.md5(b"first shard").hexdigest()[:2]
    assert os.stat(raw / "shard-000001.tar").st_ino == os.stat(next(cached.iterdir())).st_ino  # linked, not copied
    assert manifest.read_bytes() == b"manifest"
    assert dvc_outputs.restore(root, "ingest", [raw, manifest]) == []  # present: left alone
    assert dvc_outputs.restore(root, "preprocess", [root / "data" / "processed"]) == []  # nothing recorded


def test_a_cache_elsewhere_is_found_and_a_pruned_cache_means_building_afresh(tmp_path):
    root, cache = project(tmp_path, cache_dir=tmp_path / "shared-cache")
    assert dvc_outputs.cache_folder(root) == tmp_path / "shared-cache"
    raw = root / "data" / "raw"
    for path in (cache / "files" / "md5").rglob("*"):
        if path.is_file() and path.read_bytes() == b"second shard":
            path.unlink()
    assert dvc_outputs.restore(root, "ingest", [raw]) == [] and not raw.exists()


def test_a_partial_restore_links_back_the_files_the_cache_still_has(tmp_path):
    root, cache = project(tmp_path)
    raw = root / "data" / "raw"
    for path in (cache / "files" / "md5").rglob("*"):
        if path.is_file() and path.read_bytes() == b"second shard":
            path.unlink()
    assert dvc_outputs.restore(root, "ingest", [raw], partial=True) == [raw]
    assert sorted(os.listdir(raw)) == ["shard-000001.tar"]  # the stage rebuilds the other from its inputs
