"""Tests for the validate stage: real Great Expectations runs on tiny generated manifests."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tasks.params import PathsParams, ValidateParams
from tasks.paths import Paths
from tasks.validate import stage as validate

PARAMS = ValidateParams(min_classes=2, min_images_per_class=10, min_side=8, max_side=4096, max_bad_fraction=0.2)


def manifest_rows(images_per_class: dict[str, int], side: int = 32) -> list[dict[str, Any]]:
    rows = []
    for label, count in images_per_class.items():
        for index in range(count):
            rows.append({
                "path": f"{label}/{index:04d}.png", "label": label, "sha256": f"{label}-{index:060d}",
                "bytes": 1000 + index, "width": side, "height": side, "format": "JPEG" if index % 3 else "PNG",
                "mode": "RGB", "orientation": 1, "phash": f"{index:016x}", "group": f"{label}-{index}",
                "source_path": f"/source/{label}/{index:04d}.png",
            })
    return rows


def write_inputs(root: Path, rows: list[dict[str, Any]], quarantine_reasons: list[str] | None = None,
                 ingest_summary: bool = True) -> Paths:
    """Write what ingest would: manifest.parquet, and (unless None / False) quarantine.csv and ingest_summary.json."""
    paths = Paths(PathsParams(), root)
    paths.interim.mkdir(parents=True, exist_ok=True)
    paths.reports.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(paths.manifest, index=False)  # Python ints -> int64, as ingest writes them
    if quarantine_reasons is not None:
        quarantine = pd.DataFrame(
            [{"source_path": f"/source/bad/{index}.png", "label": "bad", "sha256": "", "bytes": 0, "reason": reason,
              "detail": "generated"} for index, reason in enumerate(quarantine_reasons)],
            columns=["source_path", "label", "sha256", "bytes", "reason", "detail"],
        )
        quarantine.to_csv(paths.quarantine, index=False)
    if ingest_summary:
        summary = {
            "files_seen": len(rows) + len(quarantine_reasons or []) + 2, "images_used": len(rows),
            "quarantined": len(quarantine_reasons or []), "duplicates_dropped": 2, "non_image_files": 1,
            "empty_class_folders": ["empty_class"], "root_files": ["notes.txt"], "near_duplicate_groups": 3,
        }
        (paths.interim / "ingest_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return paths


def run_failing(tmp_path: Path, rows: list[dict[str, Any]], params: ValidateParams = PARAMS,
                quarantine_reasons: list[str] | None = None) -> validate.ValidationFailed:
    paths = write_inputs(tmp_path, rows, quarantine_reasons)
    with pytest.raises(validate.ValidationFailed) as caught:
        validate.run(params, paths)
    summary = (paths.validation / "summary.txt").read_text(encoding="utf-8")
    assert "FAILED" in summary and "FAIL " in summary, "the report is written even when validation fails"
    assert (paths.validation / "data_docs" / "index.html").is_file()
    assert json.loads((paths.validation / "result.json").read_text(encoding="utf-8"))["success"] is False
    assert caught.value.outcome.failed and not caught.value.outcome.success
    assert str(caught.value).endswith("or adjust the validate.* params in params.yaml")
    return caught.value


def _refuse_network(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("the validate stage tried to reach the network")


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Paths, validate.ValidationOutcome]:
    """One passing run shared by several tests, with every socket connection refused."""
    root = tmp_path_factory.mktemp("good")
    paths = write_inputs(root, manifest_rows({"cat": 12, "dog": 15, "bird": 11}), ["corrupt", "too_small"])
    expected = ValidateParams(**{**PARAMS.model_dump(), "expected_labels": ("bird", "cat", "dog")})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _refuse_network)
        patch.setattr(socket, "create_connection", _refuse_network)
        validate.run(expected, paths)  # a first report, which the second run (nothing new) gives again
        outcome = validate.run(expected, paths)
    return paths, outcome


def test_good_dataset_passes_and_writes_the_report(good_run: tuple[Paths, validate.ValidationOutcome]) -> None:
    paths, outcome = good_run
    assert outcome.success and outcome.failed == [] and outcome.warnings == []
    assert outcome.report_dir == paths.validation
    result = json.loads((paths.validation / "result.json").read_text(encoding="utf-8"))
    assert result["success"] is True
    assert set(result["great_expectations"]) == {"manifest", "labels", "class_counts", "repeated_sha256", "dataset"}
    assert all(table["success"] for table in result["great_expectations"].values())
    index = (paths.validation / "data_docs" / "index.html").read_text(encoding="utf-8")
    assert "imgpipe_manifest" in index and "imgpipe_class_counts" in index
    assert not list(paths.reports.glob(".validation*")), "no staging or retired folder is left behind"
    assert not (paths.validation / "gx_project").exists()


def test_summary_reports_the_dataset_and_every_check(good_run: tuple[Paths, validate.ValidationOutcome]) -> None:
    paths, outcome = good_run
    summary = (paths.validation / "summary.txt").read_text(encoding="utf-8")
    assert summary == outcome.summary_text
    assert summary.startswith("Data validation PASSED")
    assert "  dog   15\n  cat   12\n  bird  11\n" in summary
    for text in ("JPEG: 25, PNG: 13", "corrupt: 1, too_small: 1",
                 "duplicates dropped: 2", "near-duplicate groups: 3", "Image size: width 32 px, height 32 px",
                 "Empty class folders (ignored): 'empty_class'",
                 "PASS  every class has >= 10 images", "PASS  no content (sha256) appears twice"):
        assert text in summary
    assert "FAIL" not in summary and "WARN" not in summary


def test_too_few_images_in_a_class_fails(tmp_path: Path) -> None:
    error = run_failing(tmp_path, manifest_rows({"cat": 12, "dog": 3}))
    assert "1 blocking check" in str(error)
    assert "class 'dog' has 3 images, under validate.min_images_per_class=10" in str(error)


def test_unknown_and_missing_labels_fail(tmp_path: Path) -> None:
    params = ValidateParams(**{**PARAMS.model_dump(), "expected_labels": ("cat", "dog", "bird")})
    error = run_failing(tmp_path, manifest_rows({"cat": 12, "dog": 12, "cow": 10}), params)
    assert "labels not in validate.expected_labels: 'cow' (10 images)" in str(error)
    assert "expected labels with no images: 'bird'" in str(error)


def test_duplicate_content_fails(tmp_path: Path) -> None:
    rows = manifest_rows({"cat": 12, "dog": 12})
    rows[-1]["sha256"] = rows[0]["sha256"]  # the same bytes under two labels
    error = run_failing(tmp_path, rows)
    assert "share their content (sha256)" in str(error)
    assert "cat/0000.png [cat] = dog/0011.png [dog]" in str(error)


def test_too_small_images_fail(tmp_path: Path) -> None:
    rows = manifest_rows({"cat": 12, "dog": 12})
    rows[5]["width"] = 4
    error = run_failing(tmp_path, rows)
    assert "1 images have a width outside validate.min_side=8..validate.max_side=4096" in str(error)
    assert "cat/0005.png (4x32)" in str(error)
    assert "height" not in str(error)


def test_too_many_quarantined_files_fail_with_reasons(tmp_path: Path) -> None:
    reasons = ["corrupt"] * 8 + ["too_small"] * 2
    error = run_failing(tmp_path, manifest_rows({"cat": 15, "dog": 15}), quarantine_reasons=reasons)
    expected = "25% of files were quarantined (10 of 40; corrupt: 8, too_small: 2), over validate.max_bad_fraction=0.2"
    assert expected in str(error)


def test_missing_values_and_too_few_classes_fail(tmp_path: Path) -> None:
    rows = manifest_rows({"cat": 12})
    rows[0]["format"] = None
    error = run_failing(tmp_path, rows)
    assert "(2 blocking checks)" in str(error)
    assert "1 manifest rows have no format" in str(error)
    assert "only 1 classes ('cat'), under validate.min_classes=2" in str(error)


def test_class_imbalance_only_warns(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path, manifest_rows({"cat": 10, "dog": 120}), ingest_summary=False)
    outcome = validate.run(PARAMS, paths)  # no quarantine.csv and no ingest_summary.json: both are optional
    assert outcome.success and outcome.failed == []
    assert outcome.warnings == [
        "classes are imbalanced in the training images: 'dog' has 120, 'cat' 10 (ratio 12.0, over "
        "validate.warn_max_class_imbalance=10); set train.class_weight: balanced or train.sampling: "
        "balanced so that the small classes are not ignored, and judge the model by macro-F1 and per-class recall "
        "rather than accuracy"
    ]
    assert "WARN  largest / smallest class <= 10" in outcome.summary_text
    assert "Quarantined: 0 " in outcome.summary_text and "Files seen: n/a" in outcome.summary_text


def test_class_imbalance_is_measured_in_the_given_train_split(tmp_path: Path) -> None:
    rows = manifest_rows({"cat": 10, "dog": 40})
    for index, row in enumerate(rows):  # cat: 5 train, 5 test; dog: 35 train, 5 test -> 7.0 in train (4.0 overall)
        row["split"] = "test" if (row["label"] == "cat" and index < 5) or (row["label"] == "dog" and index >= 45) \
            else "train"
    paths = write_inputs(tmp_path, rows, ingest_summary=False)
    outcome = validate.run(PARAMS.model_copy(update={"warn_max_class_imbalance": 5.0}), paths)
    assert len(outcome.warnings) == 1 and "'dog' has 35, 'cat' 5 (ratio 7.0" in outcome.warnings[0]


def test_missing_manifest_says_to_run_ingest(tmp_path: Path) -> None:
    with pytest.raises(validate.ValidationInputError, match="manifest not found; run the ingest stage first"):
        validate.run(PARAMS, Paths(PathsParams(), tmp_path))


def test_near_duplicates_across_given_splits_are_a_leakage_warning_with_the_pairs(tmp_path: Path) -> None:
    rows = manifest_rows({"cat": 12, "dog": 12})
    for row in rows:
        row["split"] = "test" if row["path"].endswith(("0010.png", "0011.png")) else "train"
    rows[11]["group"] = rows[0]["group"]  # cat/0011.png (test) is a near-duplicate of cat/0000.png (train)
    paths = write_inputs(tmp_path, rows, ingest_summary=False)
    outcome = validate.run(PARAMS, paths)
    assert outcome.success and outcome.failed == []  # reported, not moved, and not a failure
    leak = next(warning for warning in outcome.warnings if "near-duplicate" in warning)
    assert leak.startswith("1 near-duplicate pair(s) lie in different given splits")
    assert "cat/0000.png (train)" in leak and "cat/0011.png (test)" in leak


def test_more_classes_than_validate_max_classes_fail_naming_the_key(tmp_path: Path) -> None:
    params = ValidateParams(**{**PARAMS.model_dump(), "min_images_per_class": 1, "max_classes": 5})
    rows = manifest_rows({f"class_{index:02d}": 1 for index in range(12)})
    failure = run_failing(tmp_path, rows, params)
    message = str(failure)
    assert "12 classes, over validate.max_classes=5" in message and "raise validate.max_classes" in message
    assert "class_03" not in message  # the labels are the user's data: not listed
    assert [check for check in json.loads((tmp_path / "data/reports/validation/result.json").read_text())["checks"]
            if check["status"] == "FAIL"][0]["check"] == "at most 5 classes"


def test_validate_max_classes_is_read_from_params_yaml_with_a_default_of_1000() -> None:
    from tasks.config import parse_config

    assert ValidateParams().max_classes == 1000
    assert parse_config({"validate": {"max_classes": 50}}).validation.max_classes == 50
