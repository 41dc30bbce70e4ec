"""The run report explains itself: the training params, the labelled augmentation preview, the production history
(so that a promotion or rollback by hand shows), and the per-class scores read from beside metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from tasks import atomic, metrics_file
from tasks.params import PathsParams
from tasks.paths import Paths
from tasks.release import report


def _project(root: Path) -> Paths:
    paths = Paths(PathsParams(), root)
    atomic.write_json(paths.candidate / "model_card.json", {
        "model": "simple_cnn", "image_size": 32, "resize": "stretch", "batch_size": 16, "epochs_run": 12,
        "validation": {"epoch": 7}, "precision": "float32",
        "params": {"train": {"learning_rate": 0.002, "epochs": 30, "exports": ["onnx"], "fine_tune": {"epochs": 0}},
                   "augment": {"rotation": 0.05, "zoom": 0.1}, "seed": 42}})
    metrics_file.write(paths.evaluation, {"accuracy": 0.9, "macro_f1": 0.88, "test_images": 40})
    atomic.write_json(paths.evaluation / "per_class.json", {"per_class": {
        "cat": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 20},
        "dog": {"precision": 0.8, "recall": 0.9, "f1": 0.85, "support": 20}}})
    paths.reports.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 20), (200, 10, 10)).save(paths.reports / "augmentation_preview.png")
    return paths


def test_the_report_shows_training_params_preview_and_per_class(tmp_path):
    paths = _project(tmp_path)
    page = report.run(paths).read_text(encoding="utf-8")
    assert "Training params" in page and "train.learning_rate" in page and "0.002" in page
    assert "preprocess.augment.rotation" in page and "train.fine_tune.epochs" in page
    assert "<th>epoch kept</th><td>7</td>" in page
    assert "Augmentation preview" in page and "column “original”" in page
    assert page.count("data:image/png;base64,") >= 1
    assert "<td>cat</td>" in page and "Per class" in page  # per_class.json, beside the headline metrics.json
    assert report.read_metrics(paths)["per_class"]["dog"]["recall"] == 0.9


def test_the_report_says_which_model_is_in_production_after_a_rollback(tmp_path):
    paths = _project(tmp_path)
    history = [{"action": "promote", "version": "a" * 12, "at": "2026-01-01T00:00:00+00:00",
                "reason": "passed the gate", "requested_by": "flow", "forced": False},
               {"action": "promote", "version": "b" * 12, "at": "2026-01-02T00:00:00+00:00", "reason": "demo",
                "requested_by": "alice", "forced": True},
               {"action": "rollback", "version": "b" * 12, "restored": "a" * 12, "at": "2026-01-03T00:00:00+00:00",
                "reason": "worse on live traffic", "requested_by": "bob"}]
    atomic.write_text(paths.registry / "history.jsonl", "".join(json.dumps(event) + "\n" for event in history))
    page = report.run(paths).read_text(encoding="utf-8")
    assert f"<th>in production now</th><td>{'a' * 12}</td>" in page
    assert f"rollback to {'a' * 12}" in page and "promote (forced over the gate)" in page
    assert page.index("worse on live traffic") < page.index("passed the gate")  # newest first


def test_the_report_shows_data_health_with_the_likely_label_errors_drawn(tmp_path):
    import io

    import pandas as pd

    from tasks import data_health
    from tasks.release import gate_record

    paths = _project(tmp_path)
    page = report.run(paths).read_text(encoding="utf-8")
    assert "No data health report yet" in page
    assert gate_record.data_health_record(paths) is None  # no summary: the gate records null
    picture = io.BytesIO()
    Image.new("RGB", (30, 20), (10, 200, 10)).save(picture, format="PNG")
    summary = {"images": 200, "features": "efficientnet_lite2 features",
               "label_issues": {"checked": True, "issues": 7, "estimated_noise_rate": 0.041, "notes": ["3 folds"],
                                "confused_pairs": [{"given": "cat", "predicted": "dog", "images": 4}]},
               "near_duplicates": {"threshold": 0.97, "pairs": 5, "leaks": 2}, "outliers": {"checked": True,
                                                                                          "outliers": 1}}
    issues = pd.DataFrame({"path": ["cat/1.jpg"], "given_label": ["cat"], "suggested_label": ["dog"], "score": [0.01],
                           "split": ["train"]})
    data_health.write(paths.data_health, {data_health.LABEL_ISSUES: issues}, summary,
                      {data_health.GALLERY: picture.getvalue()})
    page = report.run(paths).read_text(encoding="utf-8")
    section = page[page.index("<section id=\"data-health\">"):]
    section = section[:section.index("</section>")]
    assert "<th>likely label errors</th><td>7 (3.5%)</td>" in section
    assert "<th>estimated label noise</th><td>4.1%</td>" in section
    assert "<th>near-duplicate pairs across splits (leaks)</th><td>2</td>" in section
    assert "<td>cat</td><td>dog</td>" in section and "3 folds" in section
    assert "data:image/png;base64," in section and "then run `imgpipe relabel`." in section
    assert gate_record.data_health_record(paths) == {"estimated_noise_rate": 0.041, "label_issues": 7, "images": 200,
                                                     "near_duplicate_leaks": 2, "outliers": 1}


def _drift(warning: str | None) -> dict:
    return {"status": "measured", "carried": False, "note": "12 images new since the last run, compared with the 48 it "
            "had", "method": "distance of the new images' mean", "features": "efficientnet_lite2 features",
            "images": 60, "new_images": 12, "reference_images": 48, "measured_images": 12, "overall": 0.61,
            "largest": {"class": "cat", "shift": 0.83, "new_images": 6},
            "classes": [{"class": "cat", "new_images": 6, "reference_images": 24, "shift": 0.83, "spread_ratio": 1.1},
                        {"class": "owl", "new_images": 6, "reference_images": 0, "shift": None, "spread_ratio": None,
                         "note": "a class the last run did not have"}],
            "threshold": 0.5, "min_images": 5, "shifted": ["cat"] if warning else [], "warning": warning}


def test_the_report_gate_record_and_artifact_show_the_drift_and_its_warning(tmp_path):
    from tasks import data_health
    from tasks.release import gate_record, report_drift

    paths = _project(tmp_path)
    page = report.run(paths).read_text(encoding="utf-8")
    assert "<section id=\"data-drift\"><h2>Data drift</h2>" in page and "No drift measured yet" in page
    assert gate_record.data_drift_record(paths) is None and report_drift.markdown(paths) is None

    warning = "data drift: the new images of 1 class(es) sit far from that class's images of the last run: cat 0.83"
    data_health.write(paths.data_health, {}, {"images": 60}, drift=_drift(warning))
    page = report.run(paths).read_text(encoding="utf-8")
    section = page[page.index("<section id=\"data-drift\">"):]
    section = section[:section.index("</section>")]
    assert "12 images new since the last run" in section and f"Warning: {warning}" in section.replace("&#x27;", "'")
    assert "<th>overall shift (spreads)</th><td>0.61</td>" in section
    assert "<th>largest shift</th><td>cat: 0.83 (6 new)</td>" in section
    number = "<td class=\"number\">"
    assert f"<td>cat</td>{number}6</td>{number}24</td>{number}0.83</td>" in section
    assert "a class the last run did not have" in section
    assert page.index("id=\"data-health\"") < page.index("id=\"data-drift\"")
    assert gate_record.data_drift_record(paths) == {
        "status": "measured", "carried": False, "new_images": 12, "overall": 0.61,
        "largest": {"class": "cat", "shift": 0.83, "new_images": 6}, "threshold": 0.5, "shifted": ["cat"],
        "warning": warning}
    text = report_drift.markdown(paths)
    assert text.startswith("## Data drift") and f"**Warning:** {warning}." in text
    assert "| cat | 6 | 24 | 0.83 | 1.10 |  |" in text and "| overall shift (spreads) | 0.61 |" in text

    data_health.write(paths.data_health, {}, {"images": 60}, drift={
        "status": "first_run", "note": "no earlier run to compare with", "warning": None, "classes": []})
    page = report.run(paths).read_text(encoding="utf-8")
    section = page.split("<section id=\"data-drift\">")[1].split("</section>")[0]
    assert "no earlier run to compare with" in section and "Warning" not in section and "<table>" not in section
