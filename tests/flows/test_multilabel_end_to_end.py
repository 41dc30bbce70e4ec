"""Multi-label data end to end: a labels CSV with "a;b" cells through the real training flow (Prefect, DVC,
TensorFlow, Great Expectations) in a temporary copy of the repository, then `imgpipe predict` on the photos."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
from sklearn.metrics import f1_score

from tasks import label_sets
from tests.conftest import write_multi_label_source
from tests.flows.test_end_to_end import NO_EXPORTS, _copy_repository, _environment_for, _set_params


def test_multi_label_data_trains_gates_promotes_and_predicts(tmp_path, prefect_server):
    from flows.training import training

    repo = _copy_repository(tmp_path / "imgpipe")
    source = write_multi_label_source(tmp_path / "photos", count=90)
    _set_params(repo, {"ingest.source": str(source), "ingest.labels": f"csv:{source / 'labels.csv'}",
                       "validate.min_images_per_class": 5, "preprocess.image_size": 16,
                       "preprocess.val_fraction": 0.25, "preprocess.test_fraction": 0.25, "train.epochs": 12,
                       "train.width": 8, "train.depth": 2, "evaluate.gate.min_macro_f1": 0.5, **NO_EXPORTS})
    summary = training(repo=str(repo))
    assert summary["outcome"] == "Promoted", summary
    labels = ["blue", "green", "red"]

    processed = json.loads((repo / "data/processed/preprocess.json").read_text())
    assert processed["task"] == "multi_label" and processed["labels"] == labels
    split = pd.read_parquet(repo / "data/processed/split.parquet")
    assert split["label"].str.contains(";").any()  # the canonical cell is kept, not exploded

    production = repo / "data/models/production"
    card = json.loads((production / "model_card.json").read_text())
    thresholds = json.loads((production / "thresholds.json").read_text())
    assert card["task"] == "multi_label" and set(thresholds) == set(labels)
    assert all(0 < value < 1 for value in thresholds.values())

    metrics = json.loads((repo / "data/reports/evaluation/metrics.json").read_text())
    assert metrics["task"] == "multi_label" and metrics["test_macro_f1"] >= 0.5
    assert {"test_micro_f1", "test_mean_average_precision", "test_macro_f1_ci"} <= set(metrics)  # named for the split
    assert "per_class" not in metrics and "test_per_class" not in metrics  # headline figures only: a column each
    details = json.loads((repo / "data/reports/evaluation/per_class.json").read_text())
    assert set(details["per_class"]) == set(labels)
    outcomes = pd.read_csv(repo / "data/reports/evaluation/confusion_matrix.csv")
    assert list(outcomes.columns) == ["label", "true_positives", "false_positives", "false_negatives",
                                      "true_negatives"]
    gate = json.loads((repo / "data/reports/evaluation/gate.json").read_text())
    assert gate["decision"] == "pass" and {"export parity", "macro-F1 floor"} == {c["name"] for c in gate["checks"]}
    report = (repo / "data/reports/index.html").read_text()
    assert "Per label" in report and "Per-label outcomes" in report

    out = tmp_path / "predictions.csv"
    predicted = subprocess.run([str(Path(sys.executable).parent / "imgpipe"), "predict", str(source), "--out", str(out),
                                "--model", str(production)], cwd=repo, env=_environment_for(repo),
                               capture_output=True, text=True)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    table = pd.read_csv(out, keep_default_na=False)
    rows = table[table["status"] == "ok"]
    assert len(rows) == 90 and (table["status"] != "ok").sum() == 1  # labels.csv is no image
    truth = dict(line.split(",") for line in (source / "labels.csv").read_text().splitlines()[1:])
    for row in rows.itertuples():
        probabilities = {getattr(row, f"top_{rank}_label"): float(getattr(row, f"top_{rank}_probability"))
                         for rank in (1, 2, 3)}  # text in the CSV, since the non-image row has none
        assert set(probabilities) == set(labels)  # every label's probability
        given = sorted(label for label in labels if probabilities[label] >= thresholds[label] - 1e-6)
        assert row.label == ";".join(given)
    # the predicted sets are as good on all photos as the gate required of the test split (macro-F1 >= 0.5)
    actual = label_sets.multi_hot([truth[path] for path in rows["path"]], labels)
    given_sets = label_sets.multi_hot(rows["label"], labels)
    score = f1_score(actual, given_sets, average="macro", zero_division=0)
    assert score >= 0.5, score
