"""How ingest reads a source: class folders, split folders, a label table, trees of links; what it leaves out."""

import logging
import os

import pandas as pd
import pytest

from tasks import label_table
from tasks.ingest.layout import scan


def touch(path, content=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_class_folders_use_the_one_walk_and_report_what_they_leave_out(tmp_path):
    touch(tmp_path / "cat" / "deep" / "a.png")
    touch(tmp_path / "cat" / "notes.txt")
    touch(tmp_path / "dog" / ".b.png")
    touch(tmp_path / "stray.jpg")
    found = scan(tmp_path)
    assert found.layout == "classes"
    assert [(file.source_path, file.label, file.split) for file in found.files] == [("cat/deep/a.png", "cat", "")]
    assert found.non_image_files == ["cat/notes.txt"] and found.root_files == ["stray.jpg"]
    assert found.empty_class_folders == ["dog"] and found.hidden_entries == 1


def test_split_folders_are_recognised_and_their_assignment_kept(tmp_path):
    for split in ("train", "Valid", "test"):
        touch(tmp_path / split / "cat" / "a.png")
        touch(tmp_path / split / "dog" / "b.jpg")
    found = scan(tmp_path)
    assert found.layout == "splits"
    assert {(file.source_path, file.label, file.split) for file in found.files} == {
        (f"{folder}/{label}/{name}", label, split)
        for folder, split in (("train", "train"), ("Valid", "val"), ("test", "test"))
        for label, name in (("cat", "a.png"), ("dog", "b.jpg"))}
    # `classes` forces today's reading: the split folders become (odd) classes
    assert {file.label for file in scan(tmp_path, layout="classes").files} == {"train", "Valid", "test"}


def test_a_class_named_like_a_split_beside_other_classes_stays_a_class_with_a_warning(tmp_path, caplog):
    touch(tmp_path / "test" / "a.png")
    touch(tmp_path / "cat" / "b.png")
    with caplog.at_level(logging.WARNING):
        found = scan(tmp_path)
    assert found.layout == "classes" and {file.label for file in found.files} == {"test", "cat"}
    assert "look like splits" in caplog.text and "ingest.layout: classes" in caplog.text


def write_table(path, rows, columns=("path", "label", "split", "group")):
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def test_a_label_table_labels_files_and_reports_missing_rows_and_unlisted_files(tmp_path):
    source = tmp_path / "photos"
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "sub/e.png"):
        touch(source / name)
    table = write_table(tmp_path / "labels.csv", [
        ("a.jpg", "cat", "train", "s1"),
        ("./b.jpg", "dog; cat", "", "s1"),  # several labels, in any order: multi-label, canonical "cat;dog"
        ("sub/e.png", "dog", "Test", ""),
        ("c.jpg", "", "", ""),  # no label
        ("gone.jpg", "cat", "", ""),  # no such file
    ])
    found = scan(source, labels=table)
    assert found.layout == "table"
    assert [(file.source_path, file.label, file.split, file.subject) for file in found.files] == [
        ("a.jpg", "cat", "train", "s1"), ("b.jpg", "cat;dog", "", "s1"), ("sub/e.png", "dog", "test", "")]
    assert found.unlisted_files == ["d.jpg"]
    assert [(row["source_path"], row["reason"]) for row in found.unusable_rows] == [
        ("c.jpg", "no_label"), ("gone.jpg", "missing_file")]


def test_a_parquet_table_works_like_a_csv(tmp_path):
    touch(tmp_path / "photos" / "a.jpg")
    pd.DataFrame({"path": ["a.jpg"], "label": ["cat"]}).to_parquet(tmp_path / "labels.parquet")
    assert [file.label for file in scan(tmp_path / "photos", labels=tmp_path / "labels.parquet").files] == ["cat"]


@pytest.mark.parametrize("rows, columns, message", [
    ([("a.jpg",)], ("path",), "has no 'label' column"),
    ([("a.jpg", "cat", "holdout")], ("path", "label", "split"), "split"),
    ([("a.jpg", "cat"), ("a.jpg", "dog")], ("path", "label"), "a.jpg"),
])
def test_a_bad_label_table_is_an_error_naming_the_file(tmp_path, rows, columns, message):
    touch(tmp_path / "photos" / "a.jpg")
    table = write_table(tmp_path / "labels.csv", rows, columns)
    with pytest.raises(ValueError, match=message) as raised:
        scan(tmp_path / "photos", labels=table)
    assert str(table) in str(raised.value)


def test_the_labels_param_names_a_table_file():
    assert label_table.parse("csv:data/labels.csv").as_posix() == "data/labels.csv"
    assert label_table.parse("table.parquet").name == "table.parquet"
    with pytest.raises(ValueError, match="ingest.labels"):
        label_table.parse("json:labels.json")


def test_a_tree_of_links_is_read_only_when_file_links_may_be_followed(tmp_path, caplog):
    real = tmp_path / "real"
    touch(real / "1.jpg")
    touch(real / "2.jpg")
    (real / "folder").mkdir()
    tree = tmp_path / "tree"
    (tree / "train" / "cat").mkdir(parents=True)
    (tree / "test" / "cat").mkdir(parents=True)
    os.symlink(real / "1.jpg", tree / "train" / "cat" / "1.jpg")
    os.symlink(real / "2.jpg", tree / "test" / "cat" / "2.jpg")
    os.symlink(real / "folder", tree / "train" / "cat" / "more")  # a folder link: never followed

    with caplog.at_level(logging.WARNING):
        with pytest.raises(ValueError, match="no image files"):
            scan(tree)
    assert "ingest.follow_file_links: true" in caplog.text

    found = scan(tree, follow_file_links=True)
    assert [(file.source_path, file.split, file.location, file.link_target) for file in found.files] == [
        ("test/cat/2.jpg", "test", str(real / "2.jpg"), str(real / "2.jpg")),
        ("train/cat/1.jpg", "train", str(real / "1.jpg"), str(real / "1.jpg"))]
    assert found.skipped_links == ["train/cat/more"]


def test_a_folder_that_is_not_a_dataset_gets_one_clear_error_and_a_short_log(tmp_path, caplog):
    for index in range(25):  # as /etc looks: many folders of text files, dangling and outside links
        touch(tmp_path / f"service{index}" / "settings.conf")
        os.symlink(tmp_path / "nowhere", tmp_path / f"service{index}" / "old.conf")
    touch(tmp_path / "hosts")
    with caplog.at_level(logging.WARNING):
        with pytest.raises(ValueError, match=f"{tmp_path}: no image files found under {tmp_path}; expected class"):
            scan(tmp_path)
    assert len(caplog.records) <= 14  # ten folders named, the rest counted; one line for files, one for links
    assert "15 more folders" in caplog.text and "is ingest.source the folder of class folders?" in caplog.text


def test_a_label_with_a_control_character_is_refused_with_its_row_named(tmp_path, caplog):
    """A class folder or table label holding a newline passed ingest and crashed train on every run (issue 27.11)."""
    touch(tmp_path / "cat" / "a.png")
    touch(tmp_path / "ca\nt" / "b.png")
    touch(tmp_path / "do\tg" / "deep" / "c.png")
    touch(tmp_path / "caf\u00e9 \u200d" / "d.png")  # accents and a zero-width joiner are real text
    with caplog.at_level(logging.WARNING):
        found = scan(tmp_path)
    assert {file.label for file in found.files} == {"cat", "caf\u00e9 \u200d"}
    assert [(row["source_path"], row["reason"]) for row in found.unusable_rows] == [
        ("ca\nt/b.png", "bad_label"), ("do\tg/deep/c.png", "bad_label")]
    assert found.unusable_rows[0]["detail"] == ("its class folder's name holds U+000A (a control character) at "
                                                "position 3; labels must be printable text: rename the folder")
    assert found.empty_class_folders == []  # not "holds no image files": it is refused, and said so
    assert "2 file(s) quarantined (reason bad_label)" in caplog.text and "'ca\\nt/b.png'" in caplog.text

    source = tmp_path / "table"
    for name in ("a.png", "b.png", "c.png"):
        touch(source / name)
    table = write_table(tmp_path / "labels.csv", [("a.png", "cat", "", ""), ("b.png", "secret\nlabel", "", ""),
                                                  ("c.png", "dog;\u202eevil", "", "")])
    found = scan(source, labels=table)
    assert [file.source_path for file in found.files] == ["a.png"]
    refused = {row["source_path"]: row for row in found.unusable_rows}
    assert {path: row["reason"] for path, row in refused.items()} == {"b.png": "bad_label", "c.png": "bad_label"}
    assert "U+000A (a control character) at position 7" in refused["b.png"]["detail"]
    assert "U+202E (an invisible formatting character)" in refused["c.png"]["detail"]
    assert not any("secret" in row["detail"] or "evil" in row["detail"] for row in found.unusable_rows)


def test_split_folders_that_hold_images_directly_are_told_about_the_classes_layout(tmp_path, caplog):
    """Class folders named train/ and test/ got advice about split folders only (issue 27.14)."""
    touch(tmp_path / "train" / "locomotive.png")
    touch(tmp_path / "test" / "exam.png")
    with pytest.raises(ValueError, match="If test/, train/ are your classes, set ingest.layout: classes"):
        scan(tmp_path)
    assert {file.label for file in scan(tmp_path, layout="classes").files} == {"train", "test"}
    touch(tmp_path / "train" / "cat" / "a.png")  # a split folder with a class folder, and a loose image beside
    with caplog.at_level(logging.WARNING):
        found = scan(tmp_path)
    assert [file.source_path for file in found.files] == ["train/cat/a.png"]
    assert "If test/, train/ are your classes, set ingest.layout: classes" in caplog.text


@pytest.mark.parametrize("folders", [("val", "valid"), ("valid", "validation"), ("Train", "train")])
def test_two_folders_for_one_split_are_refused_naming_both(tmp_path, folders):
    """val/ and valid/ were merged silently (issue 27.14)."""
    for folder in (*folders, "test"):
        touch(tmp_path / folder / "cat" / "a.png")
    first, second = sorted(folders)
    with pytest.raises(ValueError, match=f"folders {first}/ and {second}/ both name the"):
        scan(tmp_path)
    assert len(scan(tmp_path, layout="classes").labels) == 3  # as classes, each is its own
