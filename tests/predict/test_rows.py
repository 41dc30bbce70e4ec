"""No silent wrong results: a row per entry (skipped ones too), lossless names, no reuse across pixel settings."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from tasks import model_folder
from tasks.predict import classify, store
from tests.conftest import make_image, write_class_folders
from tests.predict.conftest import options, save_model

pytestmark = pytest.mark.filterwarnings("ignore:You are using a softmax:UserWarning")


def _tree_of_links(tmp_path: Path) -> tuple[Path, Path]:
    """Class folders elsewhere, and a folder of links to each of their files plus one link to a folder."""
    elsewhere = write_class_folders(tmp_path / "elsewhere", per_class=3)
    source = tmp_path / "links"
    source.mkdir()
    for photo in sorted(elsewhere.rglob("*.*")):
        (source / photo.name).symlink_to(photo)
    (source / "folder_link").symlink_to(elsewhere)
    return elsewhere, source


def test_a_folder_of_links_gets_a_skipped_row_per_link_and_says_why(tmp_path, one_label_model, capsys, caplog):
    from flows.cli import main

    elsewhere, source = _tree_of_links(tmp_path)
    out = tmp_path / "out.csv"
    assert main(["predict", str(source), "--out", str(out), "--model", str(one_label_model("thing"))]) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 10 and set(table["status"]) == {"skipped"} and set(table["reason"]) == {"link"}
    assert (table["detail"].str.contains("not followed")).all()
    printed = capsys.readouterr().out
    assert "skipped:      10  (link 10" in printed
    assert "10 entries under" in caplog.text and "links are not followed" in caplog.text
    assert "no files to classify" in caplog.text


def test_with_follow_file_links_a_tree_of_links_is_classified_and_folder_links_stay_skipped(tmp_path,
                                                                                             one_label_model, capsys):
    from flows.cli import main

    elsewhere, source = _tree_of_links(tmp_path)
    out = tmp_path / "out.csv"
    assert main(["predict", str(source), "--out", str(out), "--model", str(one_label_model("thing")),
                 "--follow-file-links"]) == 0
    table = pd.read_csv(out, keep_default_na=False).set_index("path")
    assert (table.drop(index="folder_link")["status"] == "ok").all() and len(table) == 10
    assert table.loc["folder_link", "status"] == "skipped" and table.loc["folder_link", "reason"] == "link"
    assert table.loc["red_000.png", "sha256"] == hashlib.sha256(
        (elsewhere / "red" / "red_000.png").read_bytes()).hexdigest()  # the target's bytes were read


def test_hidden_files_and_macosx_folders_get_a_skipped_row_each(tmp_path, one_label_model):
    source = write_class_folders(tmp_path / "photos", per_class=1)
    (source / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (source / "__MACOSX" / "red").mkdir(parents=True)
    (source / "__MACOSX" / "red" / "._red_000.png").write_bytes(b"\0\5\26\7")
    (source / "red" / ".git").mkdir()
    (source / "red" / ".git" / "config").write_text("[core]")
    out = tmp_path / "out.parquet"
    summary = classify.run(source, out, one_label_model("thing"), options())
    table = pd.read_parquet(out)
    skipped = table[table["status"] == "skipped"]
    assert list(skipped["path"]) == [".DS_Store", "__MACOSX/", "red/.git/"]  # a folder once, with all below it
    assert set(skipped["reason"]) == {"hidden"} and summary.skipped == {"hidden": 3}
    assert list(table["path"]) == sorted(table["path"])  # in their sorted place among the files
    assert summary.ok == 3


def test_names_that_are_not_utf8_keep_their_own_rows(tmp_path, one_label_model):
    source = tmp_path / "photos"
    source.mkdir()
    names = [b"caf\xe9.png", b"caf\\xe9.png", b"\xff.png", b"\xfe.png"]  # the first two read the same as text
    for seed, name in enumerate(names):
        make_image((10 * seed, 90, 90), seed=seed).save(os.path.join(os.fsencode(source), name), format="PNG")
    out = tmp_path / "out.parquet"
    classify.run(source, out, one_label_model("thing"), options())
    table = pd.read_parquet(out)
    assert sorted(bytes.fromhex(value) for value in table["path_bytes_hex"]) == sorted(names)
    assert (table["status"] == "ok").all()
    for row in table.itertuples():  # each row describes its own file
        content = Path(os.fsdecode(os.path.join(os.fsencode(source), bytes.fromhex(row.path_bytes_hex)))).read_bytes()
        assert row.bytes == len(content)
    assert set(table["path"]) == {"caf\\xe9.png", "\\xff.png", "\\xfe.png"}  # readable text; the hex is exact

    again = classify.run(source, out, one_label_model("thing"), options())  # found again by their exact names
    assert again.reused == 4 and again.processed == 0


def _set_card(model: Path, **changes: object) -> None:
    card_file = model / "model_card.json"
    card = json.loads(card_file.read_text())
    card_file.write_text(json.dumps(card | changes))


def test_rows_made_with_other_pixels_are_not_reused(tmp_path):
    """The model card's resize changed (the same weights, the same version): every file is classified again."""
    model = save_model(tmp_path / "model", ["blue", "green", "red"], resize="crop")
    source = tmp_path / "photos"
    for index in range(6):  # wide images: crop and pad give other pixels
        (source / "wide").mkdir(parents=True, exist_ok=True)
        make_image((40 * index, 90, 200), seed=index, size=40).resize((80, 20)).save(source / "wide" / f"{index}.png")
    out = tmp_path / "out.parquet"
    classify.run(source, out, model, options(top_k=3))
    version = model_folder.read_info(model).version

    _set_card(model, resize="pad")
    assert model_folder.read_info(model).version == version  # what the old reuse key looked at
    second = classify.run(source, out, model, options(top_k=3))
    assert second.reused == 0 and second.processed == 6, second
    fresh = tmp_path / "fresh.parquet"
    classify.run(source, fresh, model, options(top_k=3))
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(fresh))
    assert pd.read_parquet(out)["settings_id"].nunique() == 1

    more_pixels = classify.run(source, out, model, options(top_k=3, max_pixels=10**9))  # max_pixels is in the key too
    assert more_pixels.reused == 0


def test_an_interrupted_run_does_not_resume_with_other_pixel_settings(tmp_path):
    model = save_model(tmp_path / "model", ["blue", "green", "red"], resize="crop")
    source = write_class_folders(tmp_path / "photos", per_class=4)
    out = tmp_path / "out.parquet"
    state = store.state_folder(out)
    with store.locked(state):  # an interrupted run: the first chunk finished, the table never written
        plan = classify.prepare(source, out, model, options())
        classify.classify_chunks(plan, [0])
    assert store.part_file(state, 0).is_file()

    _set_card(model, resize="stretch")
    resumed = classify.run(source, out, model, options())
    assert resumed.resumed == 0 and resumed.processed == 12
    fresh = tmp_path / "fresh.parquet"
    classify.run(source, fresh, model, options())
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(fresh))


def test_a_link_loop_and_a_huge_sparse_file_get_a_row_each_and_the_run_goes_on(tmp_path, one_label_model):
    """`ln -s self.png self.png` aborted predict, and a 12 GB sparse file was read whole into memory (issue 27.10)."""
    source = write_class_folders(tmp_path / "photos", per_class=1)
    os.symlink("self.png", source / "red" / "self.png")
    with open(source / "red" / "huge.png", "wb") as handle:
        handle.truncate(12 * 10**9)  # over predict's limit (images.MAX_FILE_BYTES), and no disk space taken
    out = tmp_path / "out.parquet"
    summary = classify.run(source, out, one_label_model("thing"), options())
    table = pd.read_parquet(out).set_index("path")
    assert table.at["red/self.png", "status"] == "skipped" and table.at["red/self.png", "reason"] == "link"
    assert "in a loop" in table.at["red/self.png", "detail"]
    huge = table.loc["red/huge.png"]
    assert (huge["status"], huge["reason"], huge["bytes"]) == ("error", "too_large", 12 * 10**9)
    assert huge["detail"] == "12000000000 bytes, over the file size limit of 1000000000 bytes; not read"
    assert summary.ok == 3


def test_the_size_limit_is_checked_on_the_open_file_before_reading(tmp_path):
    from tasks.predict import decode

    source = tmp_path / "photos"
    source.mkdir()
    make_image((200, 40, 40), seed=1).save(source / "a.png")
    size = (source / "a.png").stat().st_size
    settings = decode.DecodeSettings(str(source), 16, "crop", 10**6, max_file_bytes=size - 1)
    result = decode.read_batch([decode.FileJob(b"a.png", True, "")], settings).files[0]
    assert (result.status, result.reason, result.bytes) == ("error", "too_large", size)
    at_the_limit = decode.DecodeSettings(str(source), 16, "crop", 10**6, max_file_bytes=size)
    assert decode.read_batch([decode.FileJob(b"a.png", True, "")], at_the_limit).files[0].status == "ok"
