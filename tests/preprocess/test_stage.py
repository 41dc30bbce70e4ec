"""The preprocess stage: decoded pixels equal prediction's, incremental runs, kept splits, compaction, kill -9."""

import json
import multiprocessing
from pathlib import Path

import numpy as np

from tasks import images, training_batches
from tasks.config import load_config
from tasks.ingest import stage as ingest
from tasks.paths import Paths
from tasks.preprocess import settle
from tasks.preprocess import stage as preprocess
from tests.conftest import PROJECT_ROOT, make_image, write_class_folders


def test_the_decoded_store_holds_the_pixels_prediction_sees(shrunk_config):
    config, paths = shrunk_config
    ingest.run(config.ingest, paths)
    table = preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)

    report = json.loads((paths.processed / "preprocess.json").read_text())
    assert sum(report["counts"].values()) == len(table) == 36
    split_report = json.loads((paths.reports / "split.json").read_text())
    assert split_report["images"] == report["counts"] and split_report["group_by"] is None
    assert {label: sum(counts.values()) for label, counts in split_report["per_class"].items()} == {
        "blue": 12, "green": 12, "red": 12}
    assert json.loads((paths.processed / "labels.json").read_text()) == ["blue", "green", "red"]

    size = config.preprocess.image_size
    resize = json.loads((paths.processed / "preprocess.json").read_text())["resize"]  # what `auto` stood for
    assert resize == "stretch"  # a network trained from scratch on these small images keeps the whole image
    source = paths.resolve(config.ingest.source)  # what prediction reads: the files themselves
    seen = 0
    for split in ("train", "val", "test"):
        # evaluation order, inside tf.data
        for batch in training_batches.split_dataset(paths.processed, split, size, 4, training=False, with_paths=True):
            for image, label, path in zip(batch["image"].numpy(), batch["label"].numpy(), batch["path"].numpy()):
                expected = images.load_rgb_array(source / path.decode(), size, resize,
                                                 config.ingest.max_pixels)
                np.testing.assert_array_equal(image, expected)
                row = table[table["path"] == path.decode()].iloc[0]
                assert row["split"] == split and row["label_index"] == label
                seen += 1
    assert seen == 36

    # training order (shuffled, and through the augmentation map with every strength 0): the same pixels
    no_augmentation = config.preprocess.augment.model_copy(update={"rotation": 0.0, "zoom": 0.0, "translation": 0.0,
                                                                  "horizontal_flip": False})
    training = training_batches.split_dataset(paths.processed, "train", size, 4, training=True,
                                              augment=no_augmentation, with_paths=True)
    for batch in training:
        for image, path in zip(batch["image"].numpy(), batch["path"].numpy()):
            expected = images.load_rgb_array(source / path.decode(), size, resize,
                                             config.ingest.max_pixels)
            np.testing.assert_array_equal(image, expected)


def _count_decodes(monkeypatch) -> list[str]:
    decoded: list[str] = []
    real = images.decode_array

    def counting(data, name, *arguments, **keywords):
        decoded.append(str(name))
        return real(data, name, *arguments, **keywords)

    monkeypatch.setattr(images, "decode_array", counting)
    return decoded


def _outputs(paths) -> dict[str, tuple[bytes, int]]:
    files = sorted(paths.processed.iterdir()) + [paths.reports / "split.json"]
    return {file.name: (file.read_bytes(), file.stat().st_mtime_ns) for file in files}


def test_a_rerun_decodes_only_new_images_and_never_moves_an_existing_one(shrunk_config, tiny_source, monkeypatch):
    config, paths = shrunk_config
    params = config.preprocess.model_copy(update={"workers": 1})
    ingest.run(config.ingest, paths)
    first = preprocess.run(params, config.base.seed, config.ingest.max_pixels, paths)
    before = _outputs(paths)

    decoded = _count_decodes(monkeypatch)
    preprocess.run(params, config.base.seed, config.ingest.max_pixels, paths)
    assert decoded == [] and _outputs(paths) == before  # nothing new: nothing decoded, nothing rewritten

    for index in range(4):
        make_image((200, 40, 40), seed=900 + index, size=20).save(tiny_source / "red" / f"new {index}.png")
    (tiny_source / "blue" / "blue_000.png").unlink()
    ingest.run(config.ingest, paths)
    second = preprocess.run(params, config.base.seed, config.ingest.max_pixels, paths)
    assert sorted(decoded) == [f"red/new {index}.png" for index in range(4)]
    kept = first[first["path"] != "blue/blue_000.png"].set_index("sha256")["split"]
    assert (second.set_index("sha256").loc[kept.index, "split"] == kept).all()
    old_shards = [name for name in before if name.startswith("decoded-")]
    assert all(_outputs(paths)[name] == before[name] for name in old_shards)  # never rewritten
    assert len(second) == 39 and "blue/blue_000.png" not in set(second["path"])

    decoded.clear()  # another image size: every image decoded again, the split kept
    resized = params.model_copy(update={"image_size": 12})
    third = preprocess.run(resized, config.base.seed, config.ingest.max_pixels, paths)
    assert len(decoded) == 39
    assert third.set_index("sha256")["split"].sort_index().equals(second.set_index("sha256")["split"].sort_index())
    assert not set(old_shards) & set(path.name for path in paths.processed.iterdir())


def test_shards_left_mostly_dead_by_removed_images_are_compacted_without_decoding(shrunk_config, tiny_source,
                                                                                    monkeypatch):
    config, paths = shrunk_config
    params = config.preprocess.model_copy(update={"workers": 1})
    ingest.run(config.ingest, paths)
    preprocess.run(params, config.base.seed, config.ingest.max_pixels, paths)
    for path in sorted(tiny_source.rglob("*"))[:30]:
        if path.is_file():
            path.unlink()
    ingest.run(config.ingest, paths)
    decoded = _count_decodes(monkeypatch)
    table = preprocess.run(params, config.base.seed, config.ingest.max_pixels, paths)
    assert decoded == []
    summary = json.loads((paths.processed / "preprocess.json").read_text())
    assert summary["shard_records"] == {name: int((table["shard"] == name).sum()) for name in summary["shards"]}
    seen = [path.decode() for split in ("train", "val", "test")
            for batch in training_batches.split_dataset(paths.processed, split, config.preprocess.image_size, 8,
                                                        training=False, with_paths=True)
            for path in batch["path"].numpy()]
    assert sorted(seen) == sorted(table["path"])


def _preprocess_and_die(overrides: dict, root: str) -> None:
    """In a child process: preprocess, and end abruptly (os._exit, as under kill -9) after the third image."""
    import os

    from tasks import processed_store
    from tasks.config import load_config
    from tasks.paths import Paths

    real_add, added = processed_store.ShardWriter.add, []

    def add_then_die(self, *arguments, **keywords):
        added.append(1)
        if len(added) == 3:
            os._exit(137)
        return real_add(self, *arguments, **keywords)

    processed_store.ShardWriter.add = add_then_die
    config, _ = load_config(PROJECT_ROOT / "params.yaml", overrides=overrides)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, Paths(config.paths, Path(root)))


def test_a_killed_preprocess_leaves_the_last_outputs_usable_and_the_next_run_finishes(tmp_path):
    source = write_class_folders(tmp_path / "source", per_class=6)
    overrides = {"ingest.source": str(source), "ingest.workers": 1, "preprocess.workers": 1,
                 "preprocess.image_size": 16, "preprocess.val_fraction": 0.25, "preprocess.test_fraction": 0.25}
    config, _ = load_config(PROJECT_ROOT / "params.yaml", overrides=overrides)
    paths = Paths(config.paths, tmp_path / "project")
    ingest.run(config.ingest, paths)
    first = preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    write_class_folders(source, per_class=10)
    ingest.run(config.ingest, paths)

    child = multiprocessing.get_context("spawn").Process(target=_preprocess_and_die,
                                                         args=(overrides, str(paths.root)))
    child.start()
    child.join(120)
    assert child.exitcode == 137
    readable = [path.decode() for split in ("train", "val", "test")  # the last outputs, whole
                for batch in training_batches.split_dataset(paths.processed, split, 16, 8, training=False,
                                                            with_paths=True)
                for path in batch["path"].numpy()]
    assert sorted(readable) == sorted(first["path"])
    table = preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    assert len(table) == 30 and not [path for path in paths.processed.iterdir() if path.name.endswith(".partial")]


def test_a_processed_folder_of_the_old_per_split_layout_is_replaced(shrunk_config):
    config, paths = shrunk_config
    ingest.run(config.ingest, paths)
    paths.processed.mkdir(parents=True)
    (paths.processed / "train-00000-of-00001.tfrecord").write_bytes(b"old shard")
    (paths.processed / "preprocess.json").write_text(json.dumps({"image_size": 16, "shards": {}}))
    import pandas as pd

    pd.DataFrame({"path": ["x"], "sha256": ["0" * 64], "split": ["train"]}).to_parquet(
        paths.processed / "split.parquet")
    table = preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    assert len(table) == 36 and not (paths.processed / "train-00000-of-00001.tfrecord").exists()


def test_image_size_auto_is_the_median_short_side_clamped_and_rounded_and_is_recorded(shrunk_config, monkeypatch):
    import pandas as pd

    sides = pd.DataFrame({"width": [640, 800, 530, 8], "height": [480, 600, 400, 8]})
    assert settle.choose_image_size(sides, 160) == 160  # photos: the median short side 440, clamped to 160
    assert settle.choose_image_size(sides, 64) == 64  # preprocess.auto_max_size, 64 by default
    assert settle.choose_image_size(pd.DataFrame({"width": [100, 90], "height": [100, 90]})) == 96
    assert settle.choose_image_size(pd.DataFrame({"width": [8], "height": [8]})) == 32  # the digits

    config, paths = shrunk_config
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess.model_copy(update={"image_size": "auto"}), config.base.seed,
                   config.ingest.max_pixels, paths)
    report = json.loads((paths.processed / "preprocess.json").read_text())
    assert report["image_size"] == 32 and report["auto_max_size"] == 64  # the 20 px test images, clamped up
    # later images that would move the median keep the size chosen: nothing is decoded again
    for index in range(40):
        make_image((90, 90, 90), seed=500 + index, size=120).save(paths.resolve(config.ingest.source) / "red" /
                                                                   f"big_{index}.png")
    ingest.run(config.ingest, paths)
    decoded = _count_decodes(monkeypatch)
    preprocess.run(config.preprocess.model_copy(update={"image_size": "auto"}), config.base.seed,
                   config.ingest.max_pixels, paths)
    assert json.loads((paths.processed / "preprocess.json").read_text())["image_size"] == 32
    assert len(decoded) == 40
    for batch in training_batches.split_dataset(paths.processed, "train", 32, 4, training=False):
        assert batch[0].shape[1:] == (32, 32, 3)
        break


def test_preprocess_on_a_full_disk_says_so_and_removes_its_partial_shards(shrunk_config, monkeypatch):
    import pytest

    from tasks import disk_space, tfrecord_file
    from tests.test_processed_store import _FullDiskWriter

    config, paths = shrunk_config
    ingest.run(config.ingest, paths)
    monkeypatch.setattr(tfrecord_file, "Writer", _FullDiskWriter)
    with pytest.raises(disk_space.DiskFull, match="the disk is full: cannot write the decoded image shards in") as raised:
        preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    assert str(paths.processed) in str(raised.value) and "needed" in str(raised.value)
    assert not [path for path in paths.processed.rglob("*") if ".partial" in path.name]


def test_preprocess_refuses_before_decoding_when_the_disk_cannot_hold_the_images(shrunk_config, monkeypatch):
    import pytest

    from tasks import disk_space

    config, paths = shrunk_config
    ingest.run(config.ingest, paths)
    monkeypatch.setattr(disk_space, "free_bytes", lambda folder: 1000)
    with pytest.raises(disk_space.DiskFull, match=r"cannot write 36 decoded images in .*free, about .* needed"):
        preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    assert not processed_shards(paths)


def processed_shards(paths):
    return [path for path in paths.processed.glob("*.tfrecord")] if paths.processed.is_dir() else []


def test_a_train_and_val_source_is_told_where_its_test_split_came_from(shrunk_config, tmp_path: Path, caplog):
    config, paths = shrunk_config
    source = tmp_path / "splits"
    write_class_folders(source / "train", per_class=12)
    write_class_folders(source / "val", per_class=3, size=22)  # other pictures than train/'s
    caplog.set_level("INFO")
    ingest.run(config.ingest.model_copy(update={"source": str(source)}), paths)
    table = preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)

    carved = int((table["split"] == "test").sum())
    assert carved > 0 and (table.loc[table["split"] == "val", "path"].str.startswith("val/")).all()
    assert (f"splits: train is the source's own train/ ({int((table['split'] == 'train').sum())} images); val is the "
            f"source's own val/ (9 images); test is carved out of the source's train/ by hash ({carved} images, "
            "preprocess.test_fraction 0.25); to test on images you chose, give a test/ folder") in caplog.text


WITHOUT_TENSORFLOW = """
import logging
import sys
from pathlib import Path

import tasks.ingest.stage as ingest
import tasks.preprocess.stage as preprocess
import tasks.validate.stage  # noqa: F401
from tests.conftest import shrunk, write_class_folders

logging.basicConfig(level=logging.INFO)
root = Path(sys.argv[1])
source = write_class_folders(root / "source")
config, paths = shrunk(root / "project", source)
params = config.preprocess.model_copy(update={"workers": 1})  # every image decoded and written in this process
ingest.run(config.ingest, paths)
preprocess.run(params, config.base.seed, config.ingest.max_pixels, paths)
for path in sorted(source.rglob("*.*"))[:30]:  # most images removed: the next run compacts the shard it read back
    path.unlink()
ingest.run(config.ingest, paths)
preprocess.run(params, config.base.seed, config.ingest.max_pixels, paths)
print(sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras")))
"""


def test_the_data_stages_write_and_compact_shards_without_importing_tensorflow(tmp_path):
    import os
    import subprocess
    import sys

    environment = os.environ | {"PYTHONPATH": str(PROJECT_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    child = subprocess.run([sys.executable, "-c", WITHOUT_TENSORFLOW, str(tmp_path)], cwd=PROJECT_ROOT,
                           env=environment, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    assert "compacted 1 sparse shard(s) into 1" in child.stderr, child.stderr[-3000:]
    assert child.stdout.strip().splitlines()[-1] == "[]"  # neither TensorFlow nor Keras was imported


def test_on_features_a_rerun_keeps_every_split_and_lists_the_images_in_storage_order(shrunk_config, tiny_source):
    import pandas as pd

    from tasks.preprocess.split import storage_orders

    config, paths = shrunk_config
    ingest.run(config.ingest, paths)
    first = preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths,
                           model="efficientnet_lite2", weights="auto")
    assert (first["shard"] == "").all()  # the features route keeps no pixels
    for index in range(6):
        make_image((40, 200, 40), seed=700 + index, size=20).save(tiny_source / "green" / f"late {index}.png")
    (tiny_source / "red" / "red_001.jpg").unlink()
    ingest.run(config.ingest, paths)
    second = preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths,
                            model="efficientnet_lite2", weights="auto")

    stored = pd.read_parquet(paths.processed / "split.parquet")
    assert stored["sha256"].tolist() == second["sha256"].tolist() and len(stored) == 36 + 6 - 1
    # in the order of every image's storage key, as a run from nothing writes it; the new ones placed among the rest
    assert list(storage_orders(stored["sha256"], config.base.seed)) == sorted(storage_orders(stored["sha256"],
                                                                                             config.base.seed))
    kept = first[first["path"] != "red/red_001.jpg"].set_index("sha256")["split"]
    assert (second.set_index("sha256").loc[kept.index, "split"] == kept).all()
