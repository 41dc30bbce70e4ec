"""`--copy-into DIR` never writes outside DIR, and no one file's trouble stops the other copies, on any re-run."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from tasks.predict import classify, copy_into, store
from tests.conftest import make_image, write_class_folders
from tests.predict.conftest import options

pytestmark = pytest.mark.filterwarnings("ignore:You are using a softmax:UserWarning")


def _classified(tmp_path: Path, model: Path, source: Path | None = None,
                out_name: str = "out.parquet") -> tuple[Path, Path]:
    source = source or write_class_folders(tmp_path / "photos", per_class=2)
    out = tmp_path / out_name
    classify.run(source, out, model, options())
    return source, out


def test_a_link_inside_the_target_is_never_written_through(tmp_path, one_label_model, capsys):
    from flows.cli import main

    source = write_class_folders(tmp_path / "photos", per_class=2)
    target, elsewhere = tmp_path / "sorted", tmp_path / "elsewhere"
    target.mkdir()
    elsewhere.mkdir()
    (target / "4").symlink_to(elsewhere)  # every file of label 4 would land in elsewhere
    out = tmp_path / "out.parquet"
    for link in ([], ["--link"]):
        assert main(["predict", str(source), "--out", str(out), "--model", str(one_label_model("4")),
                     "--copy-into", str(target), *link]) == 0
        assert list(elsewhere.iterdir()) == []
        printed = capsys.readouterr().out
        assert "6 refused" in printed and f"{target / '4'}: is a symbolic link" in printed
        assert "--copy-into" in printed  # the advice names the flag


def test_a_link_below_a_label_folder_is_refused_and_the_other_files_are_placed(tmp_path, one_label_model):
    source, out = _classified(tmp_path, one_label_model("4"))
    target, elsewhere = tmp_path / "sorted", tmp_path / "elsewhere"
    (target / "4").mkdir(parents=True)
    elsewhere.mkdir()
    (target / "4" / "red").symlink_to(elsewhere)
    summary = copy_into.copy_into(out, source, target)
    assert (summary.placed, summary.refused) == (4, 2) and list(elsewhere.iterdir()) == []
    assert sorted(path.name for path in (target / "4" / "blue").iterdir()) == ["blue_000.png", "blue_001.jpg"]


def test_a_dangling_link_at_a_target_name_is_left_alone_on_every_run(tmp_path, one_label_model):
    source, out = _classified(tmp_path, one_label_model("4"))
    target = tmp_path / "sorted"
    (target / "4" / "blue").mkdir(parents=True)
    dangling = target / "4" / "blue" / "blue_000.png"
    dangling.symlink_to(tmp_path / "nowhere" / "file.png")
    for run in range(2):
        summary = copy_into.copy_into(out, source, target)
        assert summary.conflict == 1 and summary.placed + summary.already_there == 5, summary
        assert dangling.is_symlink() and not (tmp_path / "nowhere").exists()
        assert any("symbolic link has the name" in problem for problem in summary.problems)


def test_a_source_name_of_255_bytes_is_copied(tmp_path, one_label_model):
    source = tmp_path / "photos"
    source.mkdir()
    names = ["a" * 234 + ".png", "b" * 251 + ".png", "é" * 125 + "c.png"]  # 238, 255 and 255 bytes
    for seed, name in enumerate(names):
        make_image((90, 90, 90), seed=seed).save(source / name)
    source, out = _classified(tmp_path, one_label_model("4"), source)
    for run in range(2):
        summary = copy_into.copy_into(out, source, tmp_path / "sorted")
        assert (summary.placed, summary.already_there) == ((3, 0) if run == 0 else (0, 3)), summary
    assert sorted(path.name for path in (tmp_path / "sorted" / "4").iterdir()) == sorted(names)


def test_a_label_that_cannot_be_a_folder_name_refuses_its_files_only(tmp_path, one_label_model):
    source, out = _classified(tmp_path, one_label_model("4"))
    table = pd.read_parquet(out)
    long_label = "x" * 300
    table.loc[table["path"].str.startswith("red/"), ["label", "top_1_label"]] = long_label
    table.loc[table["path"].str.startswith("green/"), ["label", "top_1_label"]] = ".."
    edited = tmp_path / "edited.parquet"
    table.to_parquet(edited, index=False, schema=store.output_schema(1))
    for run in range(2):
        summary = copy_into.copy_into(edited, source, tmp_path / "sorted")
        assert summary.refused == 4 and summary.placed + summary.already_there == 2
        assert {problem.split(";")[0] for problem in summary.problems} == {
            f"label {long_label[:40]!r}... is 300 bytes, longer than a folder name can be (255)",
            "label '..' cannot be a folder name"}
    assert [path.name for path in (tmp_path / "sorted").iterdir()] == ["4"]


def test_names_that_are_not_utf8_are_copied_exactly(tmp_path, one_label_model):
    source = tmp_path / "photos"
    (source / "inbox").mkdir(parents=True)
    names = [b"caf\xe9.png", b"caf\\xe9.png", b"\xff.png"]
    for seed, name in enumerate(names):
        make_image((30, 90, 90), seed=seed).save(os.path.join(os.fsencode(source / "inbox"), name), format="PNG")
    source, out = _classified(tmp_path, one_label_model("4"), source, "out.csv")
    summary = copy_into.copy_into(out, source, tmp_path / "sorted")
    assert summary.placed == 3, summary
    placed = os.fsencode(tmp_path / "sorted" / "4" / "inbox")
    assert sorted(os.listdir(placed)) == sorted(names)
    for name in names:
        with open(os.path.join(placed, name), "rb") as copy, open(os.path.join(os.fsencode(source / "inbox"), name),
                                                                  "rb") as original:
            assert copy.read() == original.read()


def test_a_csv_table_escapes_formula_cells_and_copy_into_reads_them_back_exactly(tmp_path, one_label_model):
    """Issue 27 item 14: a label or path that starts like a formula is written with a leading ' in the CSV output
    (spreadsheets show it as text); what imgpipe reads back from it (a re-run, --copy-into) is the exact value."""
    source = tmp_path / "photos"
    (source / "@inbox").mkdir(parents=True)
    for seed in range(2):
        make_image((30, 90, 90), seed=seed).save(source / "@inbox" / f"{seed}.png")
    model = one_label_model("=cmd")
    source, out = _classified(tmp_path, model, source, "out.csv")
    first = out.read_bytes()
    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert set(written["label"]) == {"'=cmd"} and all(path.startswith("'@inbox/") for path in written["path"])

    classify.run(source, out, model, options())  # a re-run reads the earlier rows back: nothing changes
    assert out.read_bytes() == first
    summary = copy_into.copy_into(out, source, tmp_path / "sorted")
    assert summary.placed == 2, summary
    assert sorted(os.listdir(tmp_path / "sorted" / "=cmd" / "@inbox")) == ["0.png", "1.png"]


def test_a_copy_is_never_wider_than_the_umask(tmp_path, one_label_model):
    source = write_class_folders(tmp_path / "photos", per_class=1)
    for image in source.rglob("*.*"):
        image.chmod(0o644)
    source, out = _classified(tmp_path, one_label_model("4"), source)
    previous = os.umask(0o077)
    try:
        summary = copy_into.copy_into(out, source, tmp_path / "sorted")
    finally:
        os.umask(previous)
    copies = [path for path in (tmp_path / "sorted").rglob("*") if path.is_file()]
    assert summary.placed == len(copies) > 0
    assert {oct(path.stat().st_mode & 0o777) for path in copies} == {oct(0o600)}
