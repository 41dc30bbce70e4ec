"""Evaluate stage: reads the candidate model and the test shards, writes data/reports/evaluation/ (metrics, confusion matrix)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import keras
import matplotlib
import numpy as np
import pandas as pd
from sklearn import metrics as sk_metrics

from tasks import atomic, dataset
from tasks.config import EvaluateParams, Paths, load_config

matplotlib.use("Agg")
from matplotlib import pyplot  # noqa: E402  (after choosing the file-only backend)

logger = logging.getLogger(__name__)


def predict_split(model: keras.Model, processed_dir: Path, split: str, image_size: int) -> pd.DataFrame:
    """Run the model over one split in shard order; one row per image with its true label and probabilities."""
    rows: list[pd.DataFrame] = []
    for batch in dataset.split_dataset(processed_dir, split, image_size, 256, training=False, with_paths=True):
        probabilities = model.predict_on_batch(batch["image"].numpy())
        rows.append(pd.DataFrame({
            "path": [path.decode("utf-8") for path in batch["path"].numpy()],
            "label_index": batch["label"].numpy(),
            "probabilities": list(np.asarray(probabilities, dtype=np.float64)),
        }))
    return pd.concat(rows, ignore_index=True)


def compute_metrics(true_index: np.ndarray, probabilities: np.ndarray, labels: list[str], top_k: int) -> dict[str, Any]:
    """Accuracy, top-k accuracy, macro and weighted F1 and per-class precision, recall, F1 and support."""
    predicted_index = probabilities.argmax(axis=1)
    label_ids = list(range(len(labels)))
    precision, recall, f1, support = sk_metrics.precision_recall_fscore_support(
        true_index, predicted_index, labels=label_ids, zero_division=0
    )
    result: dict[str, Any] = {"accuracy": float(sk_metrics.accuracy_score(true_index, predicted_index))}
    if top_k < len(labels):  # with as many guesses as classes it would be 1.0 and say nothing
        result[f"top_{top_k}_accuracy"] = float(
            sk_metrics.top_k_accuracy_score(true_index, probabilities, k=top_k, labels=label_ids))
    return result | {
        "macro_f1": float(sk_metrics.f1_score(true_index, predicted_index, labels=label_ids, average="macro",
                                              zero_division=0)),
        "weighted_f1": float(sk_metrics.f1_score(true_index, predicted_index, labels=label_ids, average="weighted",
                                                 zero_division=0)),
        "test_images": int(len(true_index)),
        "per_class": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                    "support": int(support[i])}
            for i, label in enumerate(labels)
        },
    }


def plot_confusion(matrix: np.ndarray, labels: list[str], path: Path) -> None:
    """Save the confusion matrix as a PNG: counts in each cell, colour by share of the true class."""
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    size = max(4.0, 0.5 * len(labels) + 2)
    figure, axes = pyplot.subplots(figsize=(size + 1, size))
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    axes.set_title("Confusion matrix (test split)")
    if len(labels) <= 30:
        for row in range(len(labels)):
            for column in range(len(labels)):
                axes.text(column, row, str(matrix[row, column]), ha="center", va="center", fontsize=8,
                          color="white" if shares[row, column] > 0.5 else "black")
    figure.colorbar(image, ax=axes, label="share of actual class")
    figure.tight_layout()
    with atomic.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    pyplot.close(figure)


def run(params: EvaluateParams, paths: Paths) -> dict[str, Any]:
    """Score the candidate model on the test split; write metrics.json, the predictions table and the confusion matrix."""
    model_path = paths.candidate / "model.keras"
    if not model_path.is_file():
        raise ValueError(f"{model_path}: no trained model; run the train stage first")
    model = keras.saving.load_model(model_path, safe_mode=True)
    labels: list[str] = json.loads((paths.candidate / "labels.json").read_text(encoding="utf-8"))
    image_size = int(model.input_shape[1])
    predictions = predict_split(model, paths.processed, "test", image_size)
    probabilities = np.stack(predictions["probabilities"].to_numpy())
    true_index = predictions["label_index"].to_numpy()
    predicted_index = probabilities.argmax(axis=1)
    metrics = compute_metrics(true_index, probabilities, labels, params.top_k)
    matrix = sk_metrics.confusion_matrix(true_index, predicted_index, labels=list(range(len(labels))))

    output = paths.evaluation
    output.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({
        "path": predictions["path"],
        "actual": [labels[index] for index in true_index],
        "predicted": [labels[index] for index in predicted_index],
        "confidence": probabilities.max(axis=1).round(6),
    })
    atomic.write_csv(output / "test_predictions.csv", table)
    atomic.write_csv(output / "confusion_matrix.csv",
                     pd.DataFrame(matrix, index=pd.Index(labels, name="actual"), columns=labels).reset_index())
    plot_confusion(matrix, labels, output / "confusion_matrix.png")
    atomic.write_json(output / "metrics.json", metrics)
    logger.info("evaluate: accuracy %.4f, macro-F1 %.4f on %d test images; wrote %s",
                metrics["accuracy"], metrics["macro_f1"], metrics["test_images"], output)
    return metrics


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, paths = load_config()
    run(config.evaluate, paths)


if __name__ == "__main__":
    main()
