"""The ingest stage: the raw store, incremental runs, kill -9 at any point, a full disk, migration, a Dask cluster."""

import errno
import json
import multiprocessing
import os

import pandas as pd
from pathlib import Path
import pytest

from tasks import manifest as manifest_file
from tasks import raw_store
from tasks.config import load_config
from tasks.ingest import stage as ingest
from tasks.ingest.stage import MANIFEST_COLUMNS
from tasks.params import PathsParams
from tasks.paths import Paths
from tests.conftest import PROJECT_ROOT, make_image, write_class_folders


def stored_bytes(paths: Paths, manifest: pd.DataFrame) -> list[bytes]:
    with raw_store.Reader(paths.raw) as reader:
        return [reader.read(raw_store.Location(row.shard, row.offset, row.bytes)) for row in manifest.itertuples()]


def test_ingest_stores_every_image_once_in_shards_and_writes_the_manifest(shrunk_config):
    config, paths = shrunk_config
    source = paths.resolve(config.ingest.source)
    (source / "red" / "copy.png").write_bytes((source / "red" / "red_000.png").read_bytes())
    manifest = ingest.run(config.ingest, paths)

    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert len(manifest) == 36 and manifest["sha256"].is_unique  # the exact copy is dropped, stored once
    assert sorted(manifest["label"].unique()) == ["blue", "green", "red"]
    assert set(manifest["format"]) == {"PNG", "JPEG"}
    assert (manifest["width"] == 20).all() and (manifest["height"] == 20).all()
    assert stored_bytes(paths, manifest) == [(source / path).read_bytes() for path in manifest["source_path"]]
    assert raw_store.shard_names(paths.raw) == ["shard-000001.tar"]
    assert sorted(os.listdir(paths.raw)) == ["shard-000001.tar"]  # no loose files, nothing left half-written
    assert manifest_file.read(paths.manifest).equals(manifest)
    summary = json.loads(paths.ingest_summary.read_text())
    assert summary["images_used"] == 36 and summary["quarantined"] == 0 and summary["duplicates_dropped"] == 1
    assert summary["source"] == "source"  # inside the project: relative, so a moved clone's summary is unchanged


def test_a_broken_file_is_quarantined_and_the_run_continues(shrunk_config, tiny_source):
    config, paths = shrunk_config
    (tiny_source / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tiny_source / "red" / "empty.png").write_bytes(b"")
    manifest = ingest.run(config.ingest, paths)

    assert len(manifest) == 36
    quarantine = pd.read_csv(paths.quarantine)
    assert dict(zip(quarantine["source_path"], quarantine["reason"])) == {
        "red/broken.jpg": "corrupt", "red/empty.png": "empty_file"}


def test_the_quarantine_list_is_safe_to_open_in_a_spreadsheet(shrunk_config, tiny_source):
    """A path that starts like a formula (a class folder named '=cmd') is written with a leading ' in quarantine.csv."""
    config, paths = shrunk_config
    (tiny_source / "=cmd").mkdir()
    (tiny_source / "=cmd" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tiny_source / "red" / "empty.png").write_bytes(b"")
    ingest.run(config.ingest, paths)

    quarantine = pd.read_csv(paths.quarantine, dtype=str)
    assert sorted(quarantine["source_path"]) == ["'=cmd/broken.jpg", "red/empty.png"]


def _die_at(point: str, config_values: dict, root: str) -> None:
    """In a child process: ingest, and end abruptly (os._exit: no cleanup, as under kill -9) at `point`."""
    from tasks import raw_store as store
    from tasks.ingest import state

    def die(*arguments, **keywords):
        os._exit(137)

    if point == "while adding":  # a shard half written
        real_add, added = store.ShardWriter.add, []

        def add_then_die(self, *arguments, **keywords):
            added.append(1)
            if len(added) == 12:
                die()
            return real_add(self, *arguments, **keywords)
        store.ShardWriter.add = add_then_die
    elif point == "after the shards":  # shards finished, no manifest names them yet
        state.write = die
        ingest.atomic.write_parquet = die
    config, _ = load_config(PROJECT_ROOT / "params.yaml", overrides=config_values)
    ingest.run(config.ingest, Paths(config.paths, type(PROJECT_ROOT)(root)))


@pytest.mark.parametrize("point", ["while adding", "after the shards"])
def test_a_kill_at_any_point_leaves_the_last_manifest_usable_and_the_next_run_finishes(tmp_path, point):
    source = write_class_folders(tmp_path / "source", per_class=8)
    overrides = {"ingest.source": str(source), "ingest.workers": 1}
    config, _ = load_config(PROJECT_ROOT / "params.yaml", overrides=overrides)
    paths = Paths(config.paths, tmp_path / "project")
    first = ingest.run(config.ingest, paths)
    before = paths.manifest.read_bytes()
    write_class_folders(tmp_path / "source", per_class=20)  # 36 new images

    child = multiprocessing.get_context("spawn").Process(target=_die_at, args=(point, overrides, str(paths.root)))
    child.start()
    child.join(120)
    assert child.exitcode == 137
    assert paths.manifest.read_bytes() == before  # the last manifest, whole, and every image it names readable
    assert stored_bytes(paths, first) == [(source / path).read_bytes() for path in first["source_path"]]

    manifest = ingest.run(config.ingest, paths)
    assert len(manifest) == 60
    assert stored_bytes(paths, manifest) == [(source / path).read_bytes() for path in manifest["source_path"]]
    assert not [name for name in os.listdir(paths.raw) if name.endswith(".partial")]
    stored = {key for shard in raw_store.shard_names(paths.raw) for key in raw_store.contents(paths.raw, shard)}
    assert stored == set(manifest["sha256"])  # what the killed run stored was used, not stored twice


def test_a_full_disk_stops_the_stage_with_its_cause_and_changes_nothing(shrunk_config, monkeypatch, tiny_source):
    config, paths = shrunk_config
    ingest.run(config.ingest, paths)
    outputs = [paths.manifest, paths.quarantine, paths.ingest_summary, paths.ingest_state]
    before = {path: path.read_bytes() for path in outputs} | {name: (paths.raw / name).read_bytes()
                                                             for name in raw_store.shard_names(paths.raw)}
    make_image((9, 9, 200), seed=77, size=20).save(tiny_source / "blue" / "new.png")

    def disk_full(*arguments, **keywords):
        raise OSError(errno.ENOSPC, "No space left on device", str(paths.raw / ".shard-000002.tar.partial"))

    monkeypatch.setattr(raw_store.tarfile.TarFile, "addfile", disk_full)
    with pytest.raises(OSError, match="No space left on device") as caught:
        ingest.run(config.ingest, paths)
    assert "nothing was changed" in str(caught.value) and "Free some space" in str(caught.value)
    after = {path: path.read_bytes() for path in outputs} | {name: (paths.raw / name).read_bytes()
                                                            for name in raw_store.shard_names(paths.raw)}
    assert after == before and sorted(os.listdir(paths.raw)) == ["shard-000001.tar"]
    monkeypatch.undo()
    assert "blue/new.png" in set(ingest.run(config.ingest, paths)["path"])  # nothing was skipped for good


def test_a_project_with_loose_raw_files_is_migrated_by_its_next_run(shrunk_config):
    config, paths = shrunk_config
    (paths.raw / "red").mkdir(parents=True)
    (paths.raw / "red" / "old.png").write_bytes(b"a loose copy from the old layout")
    paths.interim.mkdir(parents=True)
    pd.DataFrame({"path": ["red/old.png"], "label": ["red"], "sha256": ["0" * 64]}).to_parquet(paths.manifest)
    (paths.interim / "ingest_cache.parquet").write_bytes(b"old verdicts")
    manifest = ingest.run(config.ingest, paths)
    assert len(manifest) == 36 and "shard" in manifest.columns
    assert sorted(os.listdir(paths.raw)) == ["shard-000001.tar"]
    assert not (paths.interim / "ingest_cache.parquet").exists()
    assert not [name for name in os.listdir(paths.raw.parent) if name.startswith(".raw")]


def test_paths_that_would_let_ingest_delete_what_it_did_not_write_are_refused(tmp_path):
    for params, key in ((PathsParams(raw="."), "paths.raw"), (PathsParams(models="/tmp/elsewhere"), "paths.models"),
                        (PathsParams(interim="data/raw/x"), "paths.interim")):
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            Paths(params, tmp_path)
    paths = Paths(PathsParams(), tmp_path)
    for source in (tmp_path, tmp_path / "data", tmp_path / "data" / "raw" / "inside"):
        with pytest.raises(ValueError, match="ingest.source: .* overlaps paths"):
            paths.check_source(source, "ingest.source")
    paths.check_source(tmp_path / "data" / "demo" / "digits", "ingest.source")  # the demo may be the source
    paths.check_source(tmp_path.parent / "photos", "ingest.source")


def test_a_two_worker_dask_cluster_gives_the_same_manifest_and_shards_as_one_process(tmp_path):
    from distributed import LocalCluster

    source = write_class_folders(tmp_path / "source", per_class=100)  # over the serial threshold
    config, _ = load_config(PROJECT_ROOT / "params.yaml", overrides={"ingest.source": str(source),
                                                                       "ingest.workers": 1})
    alone = Paths(config.paths, tmp_path / "alone")
    ingest.run(config.ingest, alone)
    clustered = Paths(config.paths, tmp_path / "cluster")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        ingest.run(config.ingest.model_copy(update={"scheduler": cluster.scheduler_address}), clustered)
    assert alone.manifest.read_bytes() == clustered.manifest.read_bytes()
    assert raw_store.shard_names(alone.raw) == raw_store.shard_names(clustered.raw)
    for name in raw_store.shard_names(alone.raw):
        assert (alone.raw / name).read_bytes() == (clustered.raw / name).read_bytes()


def test_gc_compacts_shards_mostly_holding_removed_images_and_keeps_every_used_image(shrunk_config, tiny_source):
    from tasks.ingest import gc

    config, paths = shrunk_config
    params = config.ingest.model_copy(update={"shard_megabytes": 1})
    ingest.run(params, paths)
    for path in sorted(path for path in tiny_source.rglob("*") if path.is_file())[:30]:
        path.unlink()
    manifest = ingest.run(params, paths)
    before = stored_bytes(paths, manifest)
    assert gc.run(params, paths)["compacted"] == 0  # under a megabyte to reclaim: not worth a rewrite
    summary = gc.run(params, paths, min_reclaimed=0)
    assert summary["compacted"] == 1 and summary["bytes_after"] < summary["bytes_before"]
    after = manifest_file.read(paths.manifest)
    assert stored_bytes(paths, after) == before and list(after["path"]) == list(manifest["path"])
    assert raw_store.shard_names(paths.raw) == ["shard-000002.tar"]
    assert ingest.run(params, paths).equals(after)  # the next run agrees, reading nothing
    assert gc.run(params, paths, min_reclaimed=0)["compacted"] == 0  # a compact store stays as it is


def test_a_label_table_over_a_tree_of_links_gives_splits_subjects_links_and_quarantine_rows(shrunk_config, tmp_path):
    config, paths = shrunk_config
    real = paths.resolve(config.ingest.source)  # the class folders, now the files a tree of links points at
    tree = tmp_path / "tree"
    rows = []
    for index, file in enumerate(sorted(real.glob("*/*"))):
        link = tree / f"{index:03d}{file.suffix}"
        link.parent.mkdir(exist_ok=True)
        os.symlink(file, link)
        rows.append({"path": link.name, "label": file.parent.name, "split": "test" if index % 6 == 0 else "",
                     "group": f"subject-{index // 2}"})
    rows.append({"path": "missing.png", "label": "red", "split": "", "group": ""})
    table = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    params = config.ingest.model_copy(update={"source": str(tree), "labels": f"csv:{table}",
                                              "follow_file_links": True})
    manifest = ingest.run(params, paths)

    assert len(manifest) == 36 and sorted(manifest["label"].unique()) == ["blue", "green", "red"]
    first = manifest.set_index("source_path").loc["000.jpg" if (tree / "000.jpg").exists() else "000.png"]
    assert first["split"] == "test" and first["subject"] == "subject-0"
    assert first["link_target"] == str(sorted(real.glob("*/*"))[0])  # the manifest records the link and its target
    assert stored_bytes(paths, manifest) == [Path(target).read_bytes() for target in manifest["link_target"]]
    quarantine = pd.read_csv(paths.quarantine)
    assert quarantine[["source_path", "reason"]].values.tolist() == [["missing.png", "missing_file"]]
    summary = json.loads(paths.ingest_summary.read_text())
    assert summary["layout"] == "table" and summary["settings"]["follow_file_links"] is True

    # without follow_file_links the same tree is refused, and the message says how to read it
    with pytest.raises(ValueError, match="no file of the label table"):
        ingest.run(params.model_copy(update={"follow_file_links": False}), paths)


def test_gc_links_back_outputs_a_stopped_run_left_missing(shrunk_config, monkeypatch):
    """DVC removes a stage's outputs before running it: a run stopped right then leaves no manifest for gc."""
    from tasks import dvc_outputs
    from tasks.ingest import gc

    config, paths = shrunk_config
    ingest.run(config.ingest, paths)
    kept = paths.root / "kept-manifest.parquet"
    paths.manifest.rename(kept)
    restored: list = []

    def restore(root, stage, targets):  # DVC's cache stands in: what dvc.lock names is linked back
        restored.extend(targets)
        kept.rename(paths.manifest)
        return [paths.manifest]

    monkeypatch.setattr(dvc_outputs, "restore", restore)
    summary = gc.run(config.ingest, paths)
    assert paths.manifest in restored and summary["shards_after"] == 1 and summary["images_moved"] == 0
