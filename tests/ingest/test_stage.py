import json

import pandas as pd

from tasks.ingest import examine
from tasks.ingest import stage as ingest
from tasks.ingest.stage import MANIFEST_COLUMNS


def test_ingest_copies_every_image_and_writes_the_manifest(shrunk_config):
    config, paths = shrunk_config
    manifest = ingest.run(config.ingest, paths)

    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == 36
    assert sorted(manifest["label"].unique()) == ["blue", "green", "red"]
    assert set(manifest["format"]) == {"PNG", "JPEG"}
    assert (manifest["width"] == 20).all() and (manifest["height"] == 20).all()
    for row in manifest.itertuples():
        assert (paths.raw / row.path).read_bytes() == (paths.resolve(config.ingest.source) / row.source_path).read_bytes()
    assert pd.read_parquet(paths.manifest).equals(manifest)
    summary = json.loads((paths.interim / "ingest_summary.json").read_text())
    assert summary["images_used"] == 36 and summary["quarantined"] == 0


def test_a_broken_file_is_quarantined_and_the_run_continues(shrunk_config, tiny_source):
    config, paths = shrunk_config
    (tiny_source / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tiny_source / "red" / "empty.png").write_bytes(b"")
    manifest = ingest.run(config.ingest, paths)

    assert len(manifest) == 36
    quarantine = pd.read_csv(paths.quarantine)
    assert dict(zip(quarantine["source_path"], quarantine["reason"])) == {
        "red/broken.jpg": "corrupt", "red/empty.png": "empty_file"}
    assert not (paths.raw / "red" / "broken.jpg").exists()


def test_unchanged_source_gives_a_byte_identical_manifest_without_decoding(shrunk_config, monkeypatch):
    config, paths = shrunk_config
    ingest.run(config.ingest, paths)
    first = paths.manifest.read_bytes()

    def refuse(*arguments, **keywords):
        raise AssertionError("an unchanged file was decoded again")

    monkeypatch.setattr(examine.images, "inspect", refuse)
    ingest.run(config.ingest, paths)
    assert paths.manifest.read_bytes() == first
