"""Evaluation of a multi-label model: takes its test predictions, writes data/reports/evaluation/ (metrics.json, the
predictions with every label's probability, a per-label table and pictures in place of a confusion matrix).

The file names are those of a single-label evaluation, so the pipeline's outputs and the run report stay the same:
confusion_matrix.csv holds each label's true/false positives and negatives, confusion_matrix.png draws them as
counts and confusion_matrix_normalised.png as rates (of the images that have, or have not, the label).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks import atomic, csv_cells, label_sets, metrics_file, model_folder
from tasks.evaluate import plots
from tasks.scoring import multilabel

logger = logging.getLogger(__name__)


def prediction_table(paths: list[str], truth: np.ndarray, probabilities: np.ndarray, labels: list[str],
                     thresholds: tuple[float, ...]) -> pd.DataFrame:
    """path, actual and predicted label sets (";"-joined), confidence (how sure the least sure yes-or-no of the set
    is) and `probability_<label>` for each label."""
    predicted = label_sets.decide(probabilities, thresholds)
    table = pd.DataFrame({
        "path": paths,
        "actual": label_sets.cells_from(truth, labels),
        "predicted": label_sets.cells_from(predicted, labels),
        "confidence": label_sets.decision_confidence(probabilities, thresholds).round(6),
    })
    columns = pd.DataFrame(probabilities.round(6), columns=[f"probability_{label}" for label in labels])
    return pd.concat([table, columns], axis=1)


def write(predictions: pd.DataFrame, info: model_folder.ModelInfo, history: pd.DataFrame, seed: int,
          thumbnails: plots.Thumbnails, output: Path) -> dict[str, Any]:
    """Score a multi-label model's test predictions (`labels` multi-hot and `probabilities` per image) at its
    thresholds and write the evaluation files; return metrics.json's content."""
    labels, thresholds = list(info.labels), info.thresholds or ()
    truth = np.stack(predictions["labels"].to_numpy()).astype(bool)
    probabilities = np.stack(predictions["probabilities"].to_numpy())
    metrics = multilabel.compute_metrics(truth, probabilities, thresholds, labels, seed)
    predicted = label_sets.decide(probabilities, thresholds)
    outcomes = pd.DataFrame(multilabel.outcome_counts(truth, predicted, labels))

    output.mkdir(parents=True, exist_ok=True)
    table = prediction_table(predictions["path"].tolist(), truth, probabilities, labels, thresholds)
    atomic.write_parquet(output / "test_predictions.parquet", table)  # exact labels and paths, which the gate reads
    atomic.write_csv(output / "test_predictions.csv", csv_cells.safe_table(table))
    atomic.write_csv(output / "confusion_matrix.csv", csv_cells.safe_table(outcomes))
    per_class = pd.DataFrame([{"class": label, **scores} for label, scores in metrics["per_class"].items()])
    atomic.write_csv(output / "per_class.csv", csv_cells.safe_table(per_class))
    plots.label_outcomes(outcomes, output / "confusion_matrix.png", normalised=False)
    plots.label_outcomes(outcomes, output / "confusion_matrix_normalised.png", normalised=True)
    plots.per_class_bars(metrics["per_class"], output / "per_class.png")
    plots.training_curves(history, output / "training_curves.png", model_folder.read_kept_epoch(info.folder))
    plots.mistakes_gallery(table, thumbnails, output / "mistakes.png")
    metrics_file.write(output, metrics)  # the headline figures, and the per-label tables beside them
    logger.info("evaluate: multi-label, subset accuracy %.4f, macro-F1 %.4f, micro-F1 %.4f, mAP %s on %d test "
                "images; wrote %s", metrics["accuracy"], metrics["macro_f1"], metrics["micro_f1"],
                "n/a" if metrics["mean_average_precision"] is None else f"{metrics['mean_average_precision']:.4f}",
                metrics["test_images"], output)
    return metrics
