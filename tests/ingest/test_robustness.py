"""The ingest stage on a nasty real-world source tree, built on the fly: every bad case, links, names, duplicates,
incremental re-runs and the validation verdict."""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks import images, raw_store
from tasks.config import load_config
from tasks.ingest import stage as ingest
from tasks.ingest.duplicates import LabelConflictError
from tasks.params import Config
from tasks.paths import Paths
from tasks.validate import stage as validate
from tests.conftest import PROJECT_ROOT, make_image, save, scene

UNICODE_NAME = "é \"q\" 'x'.JPG"
# source path -> the reason it must be quarantined for
EXPECTED_QUARANTINE = {
    "cat/zero.jpg": "empty_file",
    "cat/truncated.jpg": "corrupt",
    "cat/random bytes.png": "not_an_image",
    "cat/text.jpg": "not_an_image",
    "cat/icon.png": "not_an_image",  # an ICO file: a format outside the list, whatever the name says
    "cat/tiny.png": "too_small",
    "cat/large.png": "too_many_pixels",
    "cat/bomb.png": "too_many_pixels",
    "cat/conflict.png": "label_conflict",
    "dog/conflict copy.png": "label_conflict",
}


def config_for(source: Path, **overrides: Any) -> Config:
    config, _ = load_config(PROJECT_ROOT / "params.yaml", overrides={
        "ingest.source": str(source), "ingest.max_pixels": 500_000, "ingest.workers": 1,
        "validate.min_images_per_class": 3, **overrides})
    return config


def build_nasty_tree(root: Path) -> tuple[Path, Path]:
    """Write the source tree (and a folder outside it that links point to); return (source, outside)."""
    source, outside = root / "source", root / "outside"
    save(make_image((10, 10, 10), seed=999, size=32), outside / "secret.png")
    save(make_image((10, 10, 10), seed=998, size=32), outside / "folder" / "also secret.png")

    colours = {"cat": (200, 40, 40), "dog": (40, 180, 60), "chat noir": (30, 30, 30)}
    formats = ["png", "jpg", "JPG", "jpeg", "webp", "bmp", "gif", "tif", "Tif", "TIFF", "PNG"]
    for class_index, (label, colour) in enumerate(colours.items()):
        for index, suffix in enumerate(formats[: 6 if label == "chat noir" else len(formats)]):
            save(make_image(colour, seed=100 * class_index + index, size=24), source / label / f"good {index}.{suffix}")
    cat = source / "cat"
    save(make_image((200, 40, 40), seed=50, size=24), cat / "sub" / "deeper" / "nested.png")
    save(make_image((30, 30, 30), seed=51, size=24), source / "chat noir" / UNICODE_NAME, format="JPEG")

    # bad files
    (cat / "zero.jpg").write_bytes(b"")
    whole = save(make_image((200, 40, 40), seed=52, size=64), cat / "whole.jpg").read_bytes()
    (cat / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (cat / "whole.jpg").unlink()
    (cat / "random bytes.png").write_bytes(np.random.default_rng(0).bytes(2000))
    (cat / "text.jpg").write_text("this is not a picture\n")
    save(make_image((200, 40, 40), seed=53, size=24), cat / "icon.png", format="ICO")
    save(make_image((200, 40, 40), seed=54, size=24).resize((30, 5)), cat / "tiny.png")
    save(Image.new("RGB", (1000, 1000), (200, 40, 40)), cat / "large.png")
    bomb = save(Image.new("L", (1, 1)), cat / "bomb.png")
    data = bytearray(bomb.read_bytes())
    data[16:24] = struct.pack(">II", 50_000, 50_000)  # the header claims 2.5 gigapixels
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    bomb.write_bytes(bytes(data))

    # hidden entries, non-images, links, a FIFO, an empty class, files at the root
    save(make_image((200, 40, 40), seed=55, size=24), cat / ".hidden.jpg")
    save(make_image((200, 40, 40), seed=56, size=24), cat / ".thumbnails" / "t.jpg")
    save(make_image((1, 1, 1), seed=57, size=24), source / ".git" / "objects.png")
    (cat / "notes.txt").write_text("notes")
    (cat / "meta.json").write_text("{}")
    (cat / "outside link.jpg").symlink_to(outside / "secret.png")
    (cat / "dangling.png").symlink_to(root / "nowhere.png")
    (cat / "outside folder").symlink_to(outside / "folder", target_is_directory=True)
    (cat / "sub" / "loop").symlink_to(cat, target_is_directory=True)
    (cat / "inside link.png").symlink_to(cat / "good 0.png")  # inside the tree: used, as a duplicate
    os.mkfifo(cat / "pipe.jpg")  # reading it would block for ever
    (source / "empty class").mkdir()
    (source / "only text").mkdir()
    (source / "only text" / "readme.txt").write_text("nothing to see")
    (source / "linked class").symlink_to(outside / "folder", target_is_directory=True)
    save(make_image((9, 9, 9), seed=58, size=24), source / "stray.jpg")
    (source / "README.md").write_text("my photos")

    # duplicates: an exact copy inside a class, the same content under two labels, a near-duplicate
    (cat / "sub" / "copy of good 1.png").write_bytes((cat / "good 1.jpg").read_bytes())
    conflict = save(make_image((120, 120, 0), seed=59, size=24), cat / "conflict.png").read_bytes()
    (source / "dog" / "conflict copy.png").write_bytes(conflict)
    save(scene(), source / "dog" / "scene.png")
    save(scene().resize((90, 90)).point(lambda value: min(255, value + 4)), source / "dog" / "scene re-saved.jpg",
         quality=85)
    return source, outside


@pytest.fixture
def nasty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """Ingest the nasty tree once, recording every file opened for reading."""
    caplog.set_level("INFO")
    source, outside = build_nasty_tree(tmp_path)
    opened: list[Path] = []
    real_open = builtins.open

    def watching_open(file: Any, *arguments: Any, **keywords: Any) -> Any:
        if isinstance(file, (str, os.PathLike)):
            path = Path(os.fsdecode(file)).resolve()
            opened.append(path)
            if path.is_relative_to(outside.resolve()):
                raise PermissionError(13, "the test forbids reading outside the source tree", str(file))
        return real_open(file, *arguments, **keywords)

    real_os_open = os.open

    def watching_os_open(file: Any, *arguments: Any, dir_fd: int | None = None, **keywords: Any) -> Any:
        folder = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else ""  # a name in an open folder
        path = Path(folder, os.fsdecode(file)).resolve()
        opened.append(path)
        if path.is_relative_to(outside.resolve()):
            raise PermissionError(13, "the test forbids reading outside the source tree", str(file))
        return real_os_open(file, *arguments, dir_fd=dir_fd, **keywords)

    monkeypatch.setattr(builtins, "open", watching_open)
    monkeypatch.setattr(io, "open", watching_open)  # pathlib opens through io.open
    monkeypatch.setattr(os, "open", watching_os_open)  # images.read_file opens with os.open
    config = config_for(source)
    paths = Paths(config.paths, tmp_path / "project")
    manifest = ingest.run(config.ingest, paths)
    monkeypatch.undo()
    return {"source": source, "outside": outside, "paths": paths, "manifest": manifest, "opened": opened,
            "log": caplog.text,
            "quarantine": pd.read_csv(paths.quarantine, keep_default_na=False),
            "summary": json.loads((paths.interim / "ingest_summary.json").read_text(encoding="utf-8"))}


def stored_bytes(paths: Paths, manifest: pd.DataFrame) -> list[bytes]:
    """Each manifest row's bytes as the raw store holds them."""
    with raw_store.Reader(paths.raw) as reader:
        return [reader.read(raw_store.Location(row.shard, row.offset, row.bytes)) for row in manifest.itertuples()]


def test_every_good_image_is_used_once_and_stored(nasty):
    manifest, paths, source = nasty["manifest"], nasty["paths"], nasty["source"]
    expected = {f"{label}/good {index}.{suffix}"
                for label, count in (("cat", 11), ("dog", 11), ("chat noir", 6))
                for index, suffix in enumerate(["png", "jpg", "JPG", "jpeg", "webp", "bmp", "gif", "tif", "Tif",
                                                "TIFF", "PNG"][:count])}
    expected |= {"cat/sub/deeper/nested.png", f"chat noir/{UNICODE_NAME}", "dog/scene.png", "dog/scene re-saved.jpg"}
    assert set(manifest["path"]) == expected
    assert list(manifest["path"]) == sorted(expected)
    assert list(manifest.columns) == ingest.MANIFEST_COLUMNS
    assert sorted(manifest["label"].unique()) == ["cat", "chat noir", "dog"]
    assert set(manifest["format"]) == {"PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"}
    assert manifest["sha256"].is_unique
    assert stored_bytes(paths, manifest) == [(source / path).read_bytes() for path in manifest["source_path"]]
    stored = {key for shard in raw_store.shard_names(paths.raw) for key in raw_store.contents(paths.raw, shard)}
    conflicted = {hashlib.sha256((source / path).read_bytes()).hexdigest() for path in ("cat/conflict.png",)}
    # stored once each: nothing bad, skipped or duplicated (content under two labels is known to conflict only once
    # every file is read, so its bytes may stay in a shard, unused)
    assert set(manifest["sha256"]) <= stored <= set(manifest["sha256"]) | conflicted


def test_bad_files_are_quarantined_with_a_reason_and_the_run_continues(nasty):
    quarantine = nasty["quarantine"]
    assert list(quarantine.columns) == ingest.QUARANTINE_COLUMNS
    assert dict(zip(quarantine["source_path"], quarantine["reason"])) == EXPECTED_QUARANTINE
    rows = quarantine.set_index("source_path")
    assert rows.loc["cat/zero.jpg", "bytes"] == 0
    for path in EXPECTED_QUARANTINE:  # each is identified by content, as far as it could be read
        assert rows.loc[path, "sha256"] == hashlib.sha256((nasty["source"] / path).read_bytes()).hexdigest()
    assert "ingest.max_pixels" in rows.loc["cat/large.png", "detail"]
    assert "50000x50000" in rows.loc["cat/bomb.png", "detail"]
    assert "ingest.min_side" in rows.loc["cat/tiny.png", "detail"]
    assert "dog" in rows.loc["cat/conflict.png", "detail"] and "cat" in rows.loc["dog/conflict copy.png", "detail"]


def test_the_summary_counts_everything_that_was_skipped(nasty):
    summary = nasty["summary"]
    assert summary["images_used"] == len(nasty["manifest"]) == 32
    assert summary["quarantined"] == len(EXPECTED_QUARANTINE)
    assert summary["quarantined_by_reason"] == {"corrupt": 1, "empty_file": 1, "label_conflict": 2,
                                                "not_an_image": 3, "too_many_pixels": 2, "too_small": 1}
    # 44 candidate files = 32 used + 10 quarantined + 2 exact duplicates dropped
    assert summary["files_seen"] == 44
    assert summary["duplicates_dropped"] == 2
    assert sorted(map(sorted, summary["duplicates"])) == [["cat/good 0.png", "cat/inside link.png"],
                                                          ["cat/good 1.jpg", "cat/sub/copy of good 1.png"]]
    assert summary["non_image_files"] == 4  # notes.txt, meta.json, the FIFO, only text/readme.txt
    assert summary["empty_class_folders"] == ["empty class", "only text"]
    assert summary["root_files"] == ["README.md", "stray.jpg"]
    assert sorted(summary["skipped_links"]) == ["cat/dangling.png", "cat/outside folder", "cat/outside link.jpg",
                                                "cat/sub/loop", "linked class"]
    assert summary["hidden_entries"] == 3
    assert summary["labels"] == ["cat", "chat noir", "dog"]


def test_the_user_is_told_what_was_done(nasty):
    log = nasty["log"]
    assert "empty class: class folder holds no image files; it is not a class" in log
    assert "only text: class folder holds no image files; it is not a class" in log
    # the stray image is told to move; README.md beside the class folders is notes, not a misplaced image
    assert "1 file(s) directly under" in log and "belong to no class and were skipped (e.g. stray.jpg)" in log
    assert "README.md" not in log
    assert "5 link(s) were not followed" in log
    assert ("ingest: 44 files seen (44 read), 32 images used in 3 classes, 10 quarantined (corrupt 1, empty_file 1, "
            "label_conflict 2, not_an_image 3, too_many_pixels 2, too_small 1), 2 duplicates dropped, "
            "4 non-image files skipped") in log
    assert "{" not in log  # plain words, no Python dicts


def test_nothing_outside_the_tree_is_read(nasty):
    outside = nasty["outside"].resolve()
    assert not [path for path in nasty["opened"] if path.is_relative_to(outside)]
    source = nasty["source"].resolve()
    read = {path for path in nasty["opened"] if path.is_relative_to(source)}
    assert source / "cat" / "good 0.png" in read  # the watch did see the reads
    for column in ("path", "source_path"):
        assert not nasty["manifest"][column].str.contains("secret|outside").any()
    assert "outside" not in " ".join(nasty["quarantine"]["source_path"])


def test_near_duplicates_share_a_group(nasty):
    manifest = nasty["manifest"].set_index("path")
    original, resaved = manifest.loc["dog/scene.png"], manifest.loc["dog/scene re-saved.jpg"]
    # the group is named by its first member in path order (" " sorts before ".")
    assert original["group"] == resaved["group"] == resaved["sha256"]
    assert (int(original["phash"], 16) ^ int(resaved["phash"], 16)).bit_count() <= 4
    others = manifest.drop(["dog/scene.png", "dog/scene re-saved.jpg"])
    assert (others["group"] == others["sha256"]).all()  # every other image is a group of its own
    assert nasty["summary"]["near_duplicate_groups"] == 1


def test_the_walk_never_blocks_on_a_fifo_and_reads_names_with_spaces_quotes_and_unicode(nasty):
    manifest = nasty["manifest"].set_index("path")
    assert manifest.loc[f"chat noir/{UNICODE_NAME}", "format"] == "JPEG"
    assert "cat/pipe.jpg" not in set(nasty["quarantine"]["source_path"]) | set(manifest.index)


def test_a_label_conflict_can_stop_the_run_naming_the_files(tmp_path):
    source, _ = build_nasty_tree(tmp_path)
    config = config_for(source, **{"ingest.on_label_conflict": "fail"})
    paths = Paths(config.paths, tmp_path / "project")
    with pytest.raises(LabelConflictError) as caught:
        ingest.run(config.ingest, paths)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert "cat/conflict.png" in message and "dog/conflict copy.png" in message
    assert "ingest.on_label_conflict" in message
    assert not paths.manifest.exists()


def test_file_names_that_are_not_utf8_are_used_with_an_escaped_name(tmp_path):
    source = tmp_path / "source"
    for index in range(3):
        save(make_image((200, 40, 40), seed=index, size=24), source / "cat" / f"{index}.png")
        save(make_image((40, 180, 60), seed=10 + index, size=24), source / "dog" / f"{index}.png")
    raw_name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes, as an old archive would unpack them
    save(make_image((200, 40, 40), seed=20, size=24), source / "cat" / raw_name)
    config = config_for(source)
    paths = Paths(config.paths, tmp_path / "project")
    manifest = ingest.run(config.ingest, paths)
    row = manifest[manifest["path"] == "cat/caf\\xe9.png"]
    assert stored_bytes(paths, row) == [(source / "cat" / raw_name).read_bytes()]


def test_a_folder_that_cannot_be_listed_is_reported(tmp_path, monkeypatch):
    source = tmp_path / "source"
    for offset, label in enumerate(("cat", "dog")):
        for index in range(3):
            save(make_image((200, 40, 40), seed=10 * offset + index, size=24), source / label / f"{index}.png")
    save(make_image((200, 40, 40), seed=99, size=24), source / "cat" / "locked" / "hidden from us.png")
    real_scandir = os.scandir

    def refusing_scandir(path: Any = ".") -> Any:
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refusing_scandir)
    config = config_for(source)
    paths = Paths(config.paths, tmp_path / "project")
    manifest = ingest.run(config.ingest, paths)
    assert len(manifest) == 6
    summary = json.loads((paths.interim / "ingest_summary.json").read_text(encoding="utf-8"))
    assert summary["unreadable_folders"] == ["cat/locked"]


def small_source(root: Path, per_class: int = 6) -> Path:
    for offset, (label, colour) in enumerate((("cat", (200, 40, 40)), ("dog", (40, 180, 60)))):
        for index in range(per_class):
            save(make_image(colour, seed=1000 * offset + index, size=24), root / label / f"{index:03d}.png")
    save(make_image((200, 40, 40), seed=321, size=24), root / "cat" / "frame.bmp")
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "dog" / "empty.png").write_bytes(b"")
    return root


def count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """The names of the files images.<name> is called for, from now on."""
    called: list[str] = []
    real = getattr(images, name)

    def counting(first: Any, *arguments: Any, **keywords: Any) -> Any:  # a path, or bytes and then their name
        called.append(Path(first).name if isinstance(first, (str, os.PathLike)) else str(arguments[0]))
        return real(first, *arguments, **keywords)

    monkeypatch.setattr(images, name, counting)
    return called


def test_reingest_reads_only_new_or_changed_files_and_decodes_only_new_content(tmp_path, monkeypatch):
    source = small_source(tmp_path / "source")
    config = config_for(source)
    paths = Paths(config.paths, tmp_path / "project")
    ingest.run(config.ingest, paths)
    outputs = [paths.manifest, paths.quarantine, paths.ingest_summary, paths.ingest_state,
               *(paths.raw / name for name in raw_store.shard_names(paths.raw))]
    first = [(path.read_bytes(), path.stat().st_mtime_ns) for path in outputs]

    read, decoded = count_calls(monkeypatch, "read_file"), count_calls(monkeypatch, "inspect_bytes")
    ingest.run(config.ingest, paths)
    assert read == [] and decoded == []  # unchanged (a stat said so): bad files' verdicts are reused too
    assert [(path.read_bytes(), path.stat().st_mtime_ns) for path in outputs] == first  # untouched: DVC skips on

    for index in range(3):
        save(make_image((40, 180, 60), seed=500 + index, size=24), source / "dog" / f"new {index}.png")
    os.utime(source / "cat" / "000.png", ns=(1, 1))  # touched (or copied again): same bytes, read but not decoded
    save(make_image((200, 40, 40), seed=777, size=24), source / "cat" / "frame.bmp")  # new pixels
    manifest = ingest.run(config.ingest, paths)
    assert sorted(read) == ["000.png", "frame.bmp", "new 0.png", "new 1.png", "new 2.png"]
    assert sorted(decoded) == ["cat/frame.bmp", "dog/new 0.png", "dog/new 1.png", "dog/new 2.png"]
    assert len(manifest) == 13 + 3
    new_digest = hashlib.sha256((source / "cat" / "frame.bmp").read_bytes()).hexdigest()
    assert manifest.set_index("path").loc["cat/frame.bmp", "sha256"] == new_digest
    old_shards = first[4:]
    assert [((paths.raw / name).read_bytes(), (paths.raw / name).stat().st_mtime_ns)
            for name in raw_store.shard_names(paths.raw)[:len(old_shards)]] == old_shards  # never rewritten
    assert stored_bytes(paths, manifest) == [(source / path).read_bytes() for path in manifest["source_path"]]

    (source / "dog" / "new 1.png").unlink()
    read.clear()
    manifest = ingest.run(config.ingest, paths)
    assert read == [] and "dog/new 1.png" not in set(manifest["path"])  # a removed file leaves the manifest

    decoded.clear()
    changed_config = config_for(source, **{"ingest.min_side": 10})
    ingest.run(changed_config.ingest, paths)
    assert len(decoded) == 17  # other checks: every verdict is made again


def test_a_file_quarantined_for_a_read_error_is_examined_again_next_run(tmp_path, monkeypatch):
    source = small_source(tmp_path / "source")
    locked = source / "cat" / "000.png"
    real_read = images.read_file

    def refuse_locked(path: Path, dir_fd: int | None = None, **keywords: Any) -> bytes:
        folder = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else ""  # a name in an open folder
        if Path(folder, path) == locked:
            raise images.ImageError(path, "unreadable", "cannot read file: Permission denied")
        return real_read(path, dir_fd=dir_fd, **keywords)

    monkeypatch.setattr(images, "read_file", refuse_locked)
    config = config_for(source)
    paths = Paths(config.paths, tmp_path / "project")
    first = ingest.run(config.ingest, paths)
    assert "cat/000.png" not in set(first["path"])
    monkeypatch.undo()  # the permissions are mended; nothing about the file changed
    assert "cat/000.png" in set(ingest.run(config.ingest, paths)["path"])


def test_parallel_and_serial_ingest_write_the_same_manifest(tmp_path):
    source = small_source(tmp_path / "source", per_class=36)  # over the serial threshold: worker processes
    serial = config_for(source)
    parallel = config_for(source, **{"ingest.workers": 2})
    serial_paths = Paths(serial.paths, tmp_path / "serial")
    parallel_paths = Paths(parallel.paths, tmp_path / "parallel")
    ingest.run(serial.ingest, serial_paths)
    ingest.run(parallel.ingest, parallel_paths)
    assert serial_paths.manifest.read_bytes() == parallel_paths.manifest.read_bytes()
    assert serial_paths.quarantine.read_bytes() == parallel_paths.quarantine.read_bytes()
    shards = raw_store.shard_names(serial_paths.raw)
    assert shards and shards == raw_store.shard_names(parallel_paths.raw)
    assert all((serial_paths.raw / name).read_bytes() == (parallel_paths.raw / name).read_bytes() for name in shards)


def test_validation_fails_when_too_many_files_are_bad(tmp_path):
    source = small_source(tmp_path / "source")
    whole = save(make_image((200, 40, 40), seed=5, size=64), tmp_path / "whole.jpg").read_bytes()
    for index in range(4):
        (source / "cat" / f"cut {index}.jpg").write_bytes(whole[: len(whole) // 2 + index])
        (source / "dog" / f"fake {index}.png").write_text("not an image")
    config = config_for(source)
    paths = Paths(config.paths, tmp_path / "project")
    ingest.run(config.ingest, paths)
    with pytest.raises(validate.ValidationFailed) as caught:
        validate.run(config.validation, paths)
    message = str(caught.value)
    assert "of files were quarantined (10 of 23" in message
    assert "corrupt: 5" in message and "not_an_image: 4" in message and "empty_file: 1" in message
    assert "validate.max_bad_fraction=0.2" in message
    summary = (paths.validation / "summary.txt").read_text(encoding="utf-8")
    assert "Quarantined: 10" in summary and "not_an_image: 4" in summary
