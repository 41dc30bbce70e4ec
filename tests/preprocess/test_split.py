"""The split: stable under added images, stratified by class, subjects and near-duplicate groups kept together."""

import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import parse_config
from tasks.ingest import stage as ingest
from tasks.params import GroupBy
from tasks.paths import Paths
from tasks.preprocess import stage as preprocess
from tasks.preprocess.split import SPLITS, assign_splits, describe_splits, split_report, subjects_for
from tests.conftest import make_image


def _manifest(paths: list[str], groups: list[str] | None = None) -> pd.DataFrame:
    digests = [f"{index:064x}" for index in range(len(paths))]
    return pd.DataFrame({"path": paths, "label": [path.split("/")[0] for path in paths], "sha256": digests,
                         "group": groups or digests})


def test_each_class_is_split_in_the_requested_shares():
    paths = [f"big/{index}.png" for index in range(3000)] + [f"small/{index}.png" for index in range(400)]
    table = assign_splits(_manifest(paths), seed=11, val_fraction=0.2, test_fraction=0.1)
    shares = table.groupby("label")["split"].value_counts(normalize=True)
    for label in ("big", "small"):
        tolerance = 0.02 if label == "big" else 0.05  # about three standard deviations of a binomial share
        assert abs(shares[label]["test"] - 0.1) < tolerance and abs(shares[label]["val"] - 0.2) < tolerance
        assert abs(shares[label]["train"] - 0.7) < tolerance


def test_a_subject_stays_in_one_split_across_classes_and_near_duplicates():
    # 60 subjects with 5 images each, spread over two classes; near-duplicate pairs link subject k and k + 1
    paths = [f"{'cat' if image % 2 else 'dog'}/subject{subject}/{image}.png"
             for subject in range(60) for image in range(5)]
    groups = [f"{index:064x}" for index in range(len(paths))]
    for subject in range(0, 58, 2):  # the last image of subject k is a near-duplicate of the first of k + 1
        groups[subject * 5 + 4] = groups[(subject + 1) * 5]
    manifest = _manifest(paths, groups)
    subjects = subjects_for(manifest, GroupBy(kind="folder", level=1))
    table = assign_splits(manifest, seed=3, val_fraction=0.2, test_fraction=0.2, subjects=subjects)
    table["subject"] = subjects
    assert (table.groupby("subject")["split"].nunique() == 1).all()
    for subject in range(0, 58, 2):
        linked = table[table["subject"].isin([f"subject{subject}", f"subject{subject + 1}"])]
        assert linked["split"].nunique() == 1 and linked["unit"].nunique() == 1
    assert set(table["split"]) == set(SPLITS)

    # adding images to existing subjects and new subjects moves no existing image
    more_paths = paths + [f"cat/subject{subject}/new{image}.png" for subject in range(80) for image in range(2)]
    more = _manifest(more_paths, groups + [f"{index + 10**6:064x}" for index in range(160)])
    after = assign_splits(more, seed=3, val_fraction=0.2, test_fraction=0.2,
                          subjects=subjects_for(more, GroupBy(kind="folder", level=1)))
    assert (after["split"][:len(paths)].to_numpy() == table["split"].to_numpy()).all()

    report = split_report(table, 3, 0.2, 0.2, GroupBy(kind="folder", level=1))
    assert sum(report["images"].values()) == 300 and report["group_by"] == "folder:1"
    assert sum(report["units"].values()) == 60 - 29  # 29 linked pairs
    assert {label: sum(counts.values()) for label, counts in report["per_class"].items()} == {"cat": 120, "dog": 180}


def test_group_by_reads_from_params_text():
    assert parse_config({"preprocess": {"group_by": "folder:2"}}).preprocess.group_by == GroupBy(kind="folder", level=2)
    group_by = parse_config({"preprocess": {"group_by": "csv:meta/subjects.csv:patient"}}).preprocess.group_by
    assert (group_by.csv, group_by.column) == ("meta/subjects.csv", "patient")
    assert str(group_by) == "csv:meta/subjects.csv:patient"
    for bad in ("folder", "folder:x", "csv:subjects.csv", "subject"):
        with pytest.raises(ValueError, match="preprocess.group_by must be null, 'folder:N'"):
            parse_config({"preprocess": {"group_by": bad}})
    with pytest.raises(ValueError, match="preprocess.group_by.level must be >= 1"):
        parse_config({"preprocess": {"group_by": "folder:0"}})


def test_bad_group_by_names_the_key_and_the_file(tmp_path: Path):
    paths = Paths(parse_config({}).paths, tmp_path)
    manifest = _manifest(["cat/anna/1.png", "cat/bob/2.png", "dog/anna/3.png"])
    with pytest.raises(ValueError, match=r"preprocess.group_by folder:2: 'cat/anna/1.png' has 1 folder"):
        subjects_for(manifest, GroupBy(kind="folder", level=2))

    with pytest.raises(ValueError, match=r"preprocess.group_by: .*missing.csv not found"):
        preprocess.read_subjects(manifest, GroupBy(kind="csv", csv="missing.csv", column="owner"), paths)
    (tmp_path / "subjects.csv").write_text("path,owner\ncat/anna/1.png,anna\n./cat/bob/2.png,bob\n")
    with pytest.raises(ValueError, match=r"subjects.csv has no column 'patient' \(columns: path, owner\)"):
        preprocess.read_subjects(manifest, GroupBy(kind="csv", csv="subjects.csv", column="patient"), paths)
    with pytest.raises(ValueError, match=r"subjects.csv lists no 'owner' for 1 of 3 image\(s\), e.g. 'dog/anna/3.png'"):
        preprocess.read_subjects(manifest, GroupBy(kind="csv", csv="subjects.csv", column="owner"), paths)
    (tmp_path / "subjects.csv").write_text("path,owner\ncat/anna/1.png,anna\ncat/bob/2.png,bob\ndog/anna/3.png,\n")
    with pytest.raises(ValueError, match=r"1 row\(s\) have no 'owner'"):
        preprocess.read_subjects(manifest, GroupBy(kind="csv", csv="subjects.csv", column="owner"), paths)
    (tmp_path / "subjects.csv").write_text("path,owner\ncat/anna/1.png,anna\ncat/bob/2.png,bob\ndog/anna/3.png,anna\n")
    assert preprocess.read_subjects(manifest, GroupBy(kind="csv", csv="subjects.csv", column="owner"),
                                    paths).tolist() == ["anna", "bob", "anna"]


def test_preprocess_keeps_subjects_together_and_writes_the_split_report(shrunk_config, tmp_path: Path):
    config, paths = shrunk_config
    source = tmp_path / "subjects"
    colours = {"red": (200, 40, 40), "blue": (50, 70, 210)}
    for label_index, (label, colour) in enumerate(colours.items()):
        for subject in range(8):
            folder = source / label / f"person{subject}"
            folder.mkdir(parents=True)
            for image in range(3):
                make_image(colour, seed=label_index * 1000 + subject * 10 + image).save(folder / f"{image}.png")
    ingest_params = config.ingest.model_copy(update={"source": str(source), "near_duplicate_distance": 0})
    params = config.preprocess.model_copy(update={"group_by": GroupBy(kind="folder", level=1)})
    ingest.run(ingest_params, paths)
    table = preprocess.run(params, config.base.seed, config.ingest.max_pixels, paths)

    table["subject"] = table["path"].str.split("/").str[1]
    assert (table.groupby("subject")["split"].nunique() == 1).all()  # person3 of red and of blue are one subject
    report = json.loads((paths.reports / "split.json").read_text())
    assert report["group_by"] == "folder:1" and sum(report["images"].values()) == 48
    assert report["per_class"]["red"] == {split: int(((table["label"] == "red") & (table["split"] == split)).sum())
                                          for split in SPLITS}
    assert sum(report["units"].values()) == 8
    stored = pd.read_parquet(paths.processed / "split.parquet")
    assert list(stored["split"]) == list(table["split"]) and list(stored["sha256"]) == list(table["sha256"])


def test_splits_never_move_when_images_are_added():
    def table(count):
        digests = [f"{index:064x}" for index in range(count)]
        return pd.DataFrame({"label": ["a", "b"] * (count // 2), "sha256": digests, "group": digests})

    before = assign_splits(table(1000), seed=7, val_fraction=0.15, test_fraction=0.15)
    after = assign_splits(table(3000), seed=7, val_fraction=0.15, test_fraction=0.15)
    assert (after["split"][:1000].to_numpy() == before["split"].to_numpy()).all()
    shares = after["split"].value_counts(normalize=True)
    assert abs(shares["test"] - 0.15) < 0.03 and abs(shares["val"] - 0.15) < 0.03
    other_seed = assign_splits(table(1000), seed=8, val_fraction=0.15, test_fraction=0.15)
    assert (other_seed["split"] != before["split"]).any()


def test_a_group_never_straddles_two_splits():
    frame = pd.DataFrame({"label": ["a"] * 300, "sha256": [f"{i:064x}" for i in range(300)],
                          "group": [f"group{i // 10}" for i in range(300)]})
    splits = assign_splits(frame, seed=1, val_fraction=0.2, test_fraction=0.2)
    assert (splits.groupby("group")["split"].nunique() == 1).all()


def test_a_given_split_is_kept_and_only_a_missing_one_is_carved_out_of_the_given_train():
    paths = [f"cat/{index}.png" for index in range(2000)]
    given = ["train"] * 1500 + ["test"] * 500  # as train/ and test/ folders give it: no val split
    table = assign_splits(_manifest(paths).assign(split=given), seed=3, val_fraction=0.2, test_fraction=0.1)
    assert (table["split"].iloc[1500:] == "test").all()  # the given test split, untouched
    carved = table["split"].iloc[:1500].value_counts(normalize=True)
    assert set(carved.index) == {"train", "val"}  # no given train image ever becomes a test image
    assert abs(carved["val"] - 0.2) < 0.04

    all_given = ["train"] * 1000 + ["val"] * 500 + ["test"] * 500
    table = assign_splits(_manifest(paths).assign(split=all_given), seed=3, val_fraction=0.2, test_fraction=0.1)
    assert table["split"].tolist() == all_given

    partly = ["test"] * 100 + [""] * 1900  # a table whose split column names some images only
    table = assign_splits(_manifest(paths).assign(split=partly), seed=3, val_fraction=0.2, test_fraction=0.1)
    assert (table["split"].iloc[:100] == "test").all()
    assert set(table["split"].iloc[100:]) == {"train", "val", "test"}  # the rest by the stable hash


def test_the_log_says_which_folder_is_which_split():
    given = pd.Series(["train"] * 8 + ["val"] * 2)
    assigned = pd.Series(["train"] * 6 + ["test"] * 2 + ["val"] * 2)
    sentence = describe_splits(given, assigned, val_fraction=0.15, test_fraction=0.15)
    assert sentence == ("splits: train is the source's own train/ (6 images); val is the source's own val/ (2 images); "
                        "test is carved out of the source's train/ by hash (2 images, preprocess.test_fraction 0.15); "
                        "to test on images you chose, give a test/ folder beside train/ (or a test split in the label "
                        "table)")
    everything = pd.Series(["train", "val", "test"])
    assert "carved" not in describe_splits(everything, everything, 0.15, 0.15)
    assert describe_splits(pd.Series(["", ""]), pd.Series(["train", "test"]), 0.15, 0.15) == ""


def test_a_run_after_new_images_hashes_only_those_and_places_them_by_their_unit(monkeypatch):
    from tasks.preprocess import split

    # 2000 images of 400 subjects; every tenth image a near-duplicate of the one before it
    paths = [f"{'cat' if index % 2 else 'dog'}/subject{index // 5}/{index}.png" for index in range(2000)]
    groups = [f"{index - 1 if index % 10 == 1 else index:064x}" for index in range(2000)]
    manifest = _manifest(paths, groups)
    subjects = subjects_for(manifest, GroupBy(kind="folder", level=1))
    first = assign_splits(manifest, seed=5, val_fraction=0.2, test_fraction=0.2, subjects=subjects)
    kept = first.set_index("sha256")["split"]

    # 300 new images: 100 near-duplicates of existing images (in new subjects), 100 in existing subjects, 100 apart
    new_paths = ([f"cat/fresh{index}/dup{index}.png" for index in range(100)]
                 + [f"dog/subject{index * 3}/more{index}.png" for index in range(100)]
                 + [f"cat/fresh{100 + index}/new{index}.png" for index in range(100)])
    new_digests = [f"{10**6 + index:064x}" for index in range(300)]
    new_groups = [groups[index * 17] for index in range(100)] + new_digests[100:]
    more = pd.concat([manifest, pd.DataFrame({"path": new_paths, "label": [path.split("/")[0] for path in new_paths],
                                              "sha256": new_digests, "group": new_groups})], ignore_index=True)
    more = more.sample(frac=1, random_state=1).reset_index(drop=True)  # the new ones anywhere in the manifest
    more_subjects = subjects_for(more, GroupBy(kind="folder", level=1))

    hashed = []
    real = split.hashlib.sha256

    class Counting:
        @staticmethod
        def sha256(data):
            hashed.append(data)
            return real(data)

    monkeypatch.setattr(split, "hashlib", Counting)
    after = assign_splits(more, seed=5, val_fraction=0.2, test_fraction=0.2, subjects=more_subjects, kept=kept)
    assert len(hashed) <= 2 * 300  # the new images' units and orders only: nothing per kept image
    monkeypatch.undo()

    old = after["sha256"].isin(kept.index)
    assert (after.loc[old, "split"].to_numpy() == kept.loc[after.loc[old, "sha256"]].to_numpy()).all()
    assert after.loc[old, "order"].isna().all() and after.loc[~old, "order"].notna().all()
    assert (after.groupby("unit")["split"].nunique() == 1).all()  # a new image goes where its unit already is
    joined = after[~old & after["unit"].isin(set(after.loc[old, "unit"]))]
    assert len(joined) == 200  # the near-duplicates and the images of existing subjects
    # the images of units without a kept image are placed as a run from nothing places them
    scratch = assign_splits(more, seed=5, val_fraction=0.2, test_fraction=0.2, subjects=more_subjects)
    apart = ~old & ~after["unit"].isin(set(after.loc[old, "unit"]))
    assert apart.sum() == 100
    assert (after.loc[apart, "split"] == scratch.loc[apart, "split"]).all()
    assert (after.loc[~old, "order"] == scratch.loc[~old, "order"]).all()
    assert (after["unit"] == scratch["unit"]).all()
    assert set(after.loc[apart, "split"]) == set(SPLITS)
