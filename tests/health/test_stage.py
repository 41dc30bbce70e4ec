"""The health stage end to end through run() on tiny generated images (the stand-in features of a simple_cnn
project), `imgpipe relabel` writing the label table from its report, and the drift of the images a later run adds
(its reference linked back from DVC's cache, as under `dvc repro`)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks import data_health, label_table
from tasks.config import load_config
from tasks.embed import stage as embed
from tasks.health import relabel
from tasks.health import stage as health
from tasks.ingest import stage as ingest
from tasks.preprocess import stage as preprocess
from tests.conftest import CLASS_COLOURS, PROJECT_ROOT, make_image, write_class_folders, write_multi_label_source
from tests.test_dvc_outputs import put


def build(tmp_path: Path, source: Path, extra: dict | None = None) -> tuple:
    """A project folder (its own params.yaml) with ingest, preprocess and embed run; (config, paths, params file)."""
    values = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    overrides = {"ingest.source": str(source), "validate.min_images_per_class": 3, "preprocess.image_size": 16,
                 "preprocess.val_fraction": 0.25, "preprocess.test_fraction": 0.25, "train.model": "simple_cnn",
                 **(extra or {})}
    for key, value in overrides.items():
        section, _, leaf = key.partition(".")
        values[section][leaf] = value
    params = tmp_path / "params.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    params.write_text(yaml.safe_dump(values))
    config, paths = load_config(params)
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths, config.train.model,
                   config.train.weights)
    embed.run(config.embed, config.ingest.max_pixels, paths)
    return config, paths, params


@pytest.fixture
def mislabelled(tmp_path: Path) -> Path:
    """3 classes x 16 images; one red image filed under green."""
    source = write_class_folders(tmp_path / "source", per_class=16)
    make_image(CLASS_COLOURS["red"], seed=777).save(source / "green" / "odd_one.png")
    return source


def test_the_stage_finds_the_mislabelled_image_and_relabel_fixes_it(tmp_path: Path, mislabelled: Path):
    config, paths, params = build(tmp_path / "project", mislabelled)
    summary = health.run(config.health, config.base.seed, config.ingest.max_pixels, paths)
    folder = paths.data_health
    assert sorted(entry.name for entry in folder.iterdir()) == sorted(
        [data_health.LABEL_ISSUES, data_health.NEAR_DUPLICATES, data_health.OUTLIERS, data_health.GALLERY,
         data_health.SUMMARY, data_health.DRIFT, data_health.DRIFT_REFERENCE])
    assert summary["features"].startswith("stand-in")  # simple_cnn: the embed stage stored no features
    issues = data_health.read_label_issues(folder / data_health.LABEL_ISSUES)
    assert issues.iloc[0][["path", "given_label", "suggested_label"]].tolist() == ["green/odd_one.png", "green", "red"]
    assert summary["label_issues"]["issues"] == len(issues) <= 2
    assert data_health.read_summary(folder) == json.loads(json.dumps(summary))
    assert data_health.estimated_noise_rate(folder) == summary["label_issues"]["estimated_noise_rate"]
    assert (folder / data_health.GALLERY).read_bytes().startswith(b"\x89PNG")
    for table, columns in ((data_health.NEAR_DUPLICATES, health.DUPLICATE_COLUMNS),
                           (data_health.OUTLIERS, health.OUTLIER_COLUMNS)):
        assert pd.read_csv(folder / table).columns.tolist() == columns

    with pytest.raises(ValueError, match="validate.max_label_issue_fraction"):  # one in 49 is over 1%
        health.run(config.health, config.base.seed, config.ingest.max_pixels, paths, max_label_issue_fraction=0.01)
    assert (folder / data_health.LABEL_ISSUES).is_file()  # the report is there to act on

    accepted = tmp_path / "accepted.csv"
    issues.head(1).to_csv(accepted, index=False)  # the person keeps the first row only
    done = relabel.relabel(accepted, params)
    assert done.created and done.changed == ["green/odd_one.png"] and done.table == params.parent / "labels.csv"
    assert yaml.safe_load(params.read_text())["ingest"]["labels"] == "csv:labels.csv"
    rows = label_table.read(done.table)
    assert rows["green/odd_one.png"].label == "red" and rows["green/green_000.png"].label == "green"
    assert len(rows) == 49

    again = relabel.relabel(accepted, params)  # the table now exists and is named: updated in place, nothing to do
    assert not again.created and again.changed == [] and again.unchanged == ["green/odd_one.png"]

    config, paths = load_config(params)  # the next run ingests the table: the image is red now
    ingest.run(config.ingest, paths)
    manifest = pd.read_parquet(paths.manifest).set_index("path")
    assert manifest.at["green/odd_one.png", "label"] == "red"


def test_relabel_refuses_a_path_the_table_lacks(tmp_path: Path):
    table = pd.DataFrame({"path": ["a/1.png", "b/2.png"], "label": ["a", "b"]})
    accepted = pd.DataFrame({"path": ["./b/2.png"], "given_label": ["b"], "suggested_label": ["a"]})
    changed, _, _ = relabel.apply(table, accepted)[0], None, None
    assert changed["label"].tolist() == ["a", "a"]
    with pytest.raises(ValueError, match="no row for 'c/3.png'"):
        relabel.apply(table, accepted.assign(path=["c/3.png"]))


def test_a_multi_label_project_skips_the_label_check_with_a_note(tmp_path: Path):
    source = write_multi_label_source(tmp_path / "source")
    config, paths, _ = build(tmp_path / "project", source, {"ingest.labels": f"csv:{source / 'labels.csv'}"})
    summary = health.run(config.health, config.base.seed, config.ingest.max_pixels, paths,
                         max_label_issue_fraction=0.0)
    assert not summary["label_issues"]["checked"] and "multi-label" in summary["label_issues"]["note"]
    assert summary["label_issues"]["estimated_noise_rate"] is None
    assert summary["images"] == 60


def test_near_duplicates_in_two_splits_are_leaks():
    import numpy as np

    from tasks.params import HealthParams

    table = pd.DataFrame({"path": ["a", "b", "c"], "label": ["x", "x", "y"], "split": ["train", "test", "train"]})
    unit = np.array([[1.0, 0.0], [0.999, 0.0447], [0.0, 1.0]])
    pairs, summary = health._duplicates(HealthParams(), unit / np.linalg.norm(unit, axis=1, keepdims=True), table)
    assert pairs[["path_a", "path_b", "leak"]].values.tolist() == [["a", "b", True]]
    assert summary == {"threshold": 0.97, "pairs": 1, "images": 2, "leaks": 1, "label_disagreements": 0}


def commit_like_dvc(root: Path, stage: str, folder: Path) -> None:
    """Record `folder` in DVC's cache and dvc.lock as `dvc repro` does after a stage, then delete it as DVC does
    before running the stage again."""
    cache = root / ".dvc" / "cache"
    listing = [{"md5": put(cache, file.read_bytes()), "relpath": file.name} for file in sorted(folder.iterdir())]
    listing_md5 = put(cache, json.dumps(listing).encode())
    stored = cache / "files" / "md5" / listing_md5[:2]
    (stored / listing_md5[2:]).rename(stored / f"{listing_md5[2:]}.dir")
    lock = {"schema": "2.0", "stages": {stage: {"outs": [
        {"path": str(folder.relative_to(root)), "hash": "md5", "md5": f"{listing_md5}.dir"}]}}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    for file in folder.iterdir():
        file.unlink()
    folder.rmdir()


def test_a_later_run_measures_the_drift_of_its_new_images_and_warns_of_a_moved_class(tmp_path: Path):
    source = write_class_folders(tmp_path / "source", per_class=16)
    config, paths, params = build(tmp_path / "project", source)
    health.run(config.health, config.base.seed, config.ingest.max_pixels, paths)
    first = data_health.read_drift(paths.data_health)
    assert first["status"] == "first_run" and "no earlier run" in first["note"] and first["warning"] is None

    for index in range(6):  # new images: blue ones like the others, and red ones filed under green
        make_image(CLASS_COLOURS["blue"], seed=5000 + index).save(source / "blue" / f"new_{index}.png")
        make_image(CLASS_COLOURS["red"], seed=6000 + index).save(source / "green" / f"new_{index}.png")
    commit_like_dvc(paths.root, "health", paths.data_health)
    config, paths, _ = build(tmp_path / "project", source)
    summary = health.run(config.health, config.base.seed, config.ingest.max_pixels, paths)
    found = data_health.read_drift(paths.data_health)
    assert summary["images"] == 60 and found["status"] == "measured" and not found["carried"]
    assert found["new_images"] == 12 and found["reference_images"] == 48
    by_class = {row["class"]: row for row in found["classes"]}
    assert set(by_class) == {"blue", "green"} and by_class["green"]["new_images"] == 6
    assert by_class["green"]["shift"] > 1.0 > 0.5 > by_class["blue"]["shift"]
    assert found["shifted"] == ["green"] and "green" in found["warning"]
    assert found["threshold"] == config.health.drift_warning

    health.run(config.health, config.base.seed, config.ingest.max_pixels, paths)  # nothing new: carried over
    again = data_health.read_drift(paths.data_health)
    assert again["carried"] and again["classes"] == found["classes"] and again["warning"] == found["warning"]
