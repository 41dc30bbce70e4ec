"""Evaluate stage: reads the candidate model and the test shards, writes data/reports/evaluation/ (metrics, pictures)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from tasks import atomic, csv_cells, embedding_store, label_sets, metrics_file, model_folder, processed_store
from tasks import shard_reader, stored_images
from tasks.config import load_config
from tasks.evaluate import confusion, multilabel_report, plots
from tasks.params import EvaluateParams
from tasks.paths import Paths
from tasks.scoring import metrics as metric_functions

logger = logging.getLogger(__name__)

DETAILS_FILE = metrics_file.DETAILS_FILE  # in paths.evaluation: the per-class scores that metrics.json leaves out


def predict_split(model: keras.Model, processed_dir: Path, split: str, image_size: int,
                  multi_label: bool = False) -> pd.DataFrame:
    """Run the model over one split in shard order; one row per image with its true label (`label_index`, or for a
    multi-label model the multi-hot row `labels`) and probabilities."""
    rows: list[pd.DataFrame] = []
    for batch in shard_reader.split_batches(processed_dir, split, image_size, 256, with_paths=True,
                                            multi_label=multi_label):
        probabilities = model.predict_on_batch(batch["image"].numpy())
        truth = batch["label"].numpy()
        rows.append(pd.DataFrame({
            "path": [path.decode("utf-8") for path in batch["path"].numpy()],
            "labels" if multi_label else "label_index": list(truth) if multi_label else truth,
            "probabilities": list(np.asarray(probabilities, dtype=np.float64)),
        }))
    return pd.concat(rows, ignore_index=True)


def predict_split_from_features(model: keras.Model, store: Path, processed_dir: Path, split: str,
                                multi_label: bool = False) -> pd.DataFrame:
    """predict_split for a model whose backbone is the frozen pretrained one the embed stage ran: its head on the
    cached features of the split's images gives what the whole model gives on their pixels (the engine that
    computed them agreed with Keras, tasks/backbones/feature_engine.py), without running the backbone again."""
    table = processed_store.read_table(processed_dir)
    rows = table[table["split"] == split].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"{processed_dir}: no {split} images; run the preprocess stage")
    features = embedding_store.read_features(store, rows["sha256"].tolist())
    # the model's own head (its Dense layer and activation) on the features: the rest of the model, run by Keras
    probabilities = np.asarray(model.get_layer("probabilities")(features), dtype=np.float64)
    if multi_label:
        vocabulary = processed_store.read_labels(processed_dir)
        truth = list(label_sets.multi_hot(rows["label"].astype(str).tolist(), vocabulary).astype(np.float32))
    else:
        truth = rows["label_index"].to_numpy()
    return pd.DataFrame({"path": rows["path"], "labels" if multi_label else "label_index": truth,
                         "probabilities": list(probabilities)})


def on_cached_features(paths: Paths) -> bool:
    """Whether the candidate's backbone is the frozen one whose features the embed stage stored (same settings)."""
    backbone = model_folder.read_card(paths.candidate).get("backbone") or {}
    settings = embedding_store.read_summary(paths.embeddings).get("settings")
    return bool(backbone.get("frozen")) and settings is not None and backbone.get("embeddings") == settings


def test_predictions(model: keras.Model, paths: Paths, image_size: int, multi_label: bool) -> pd.DataFrame:
    """The candidate's predictions on the test split: from the cached features when its backbone is frozen, else
    from the images."""
    if on_cached_features(paths):
        logger.info("evaluate: the backbone is the frozen pretrained one: the head runs on its cached features")
        return predict_split_from_features(model, paths.embeddings, paths.processed, "test", multi_label)
    return predict_split(model, paths.processed, "test", image_size, multi_label=multi_label)


def stored_thumbnails(paths: Paths, max_pixels: int) -> plots.Thumbnails:
    """Pictures of images by manifest path, from the raw store (the originals, not the model's small input)."""
    def thumbnails(names: list[str]) -> list[np.ndarray | None]:
        return stored_images.pictures(paths.raw, paths.manifest, names, plots.THUMBNAIL_SIDE, max_pixels, lambda
                                      name, error: logger.warning("mistakes gallery: cannot show %s: %s", name, error))

    return thumbnails


def run(params: EvaluateParams, seed: int, max_pixels: int, paths: Paths) -> dict[str, Any]:
    """Score the candidate on the test split; write metrics.json, the predictions, per-class table and pictures."""
    model = model_folder.load(paths.candidate)
    info = model_folder.read_info(paths.candidate)
    labels = list(info.labels)
    image_size = int(model.input_shape[1])
    if info.multi_label:
        predictions = test_predictions(model, paths, image_size, multi_label=True)
        return multilabel_report.write(predictions, info, model_folder.read_history(paths.candidate), seed,
                                       stored_thumbnails(paths, max_pixels), paths.evaluation)
    predictions = test_predictions(model, paths, image_size, multi_label=False)
    probabilities = np.stack(predictions["probabilities"].to_numpy())
    true_index = predictions["label_index"].to_numpy()
    predicted_index = probabilities.argmax(axis=1)
    metrics = metric_functions.compute_metrics(true_index, probabilities, labels, params.top_k, seed)
    pairs = confusion.pair_counts(true_index, predicted_index)  # sparse: 10,000 classes are 10^8 cells dense
    if len(set(true_index.tolist())) > 1 and len(set(predicted_index.tolist())) == 1:
        logger.warning("evaluate: the candidate names %r for every one of the %d test images, which hold %d classes: "
                       "it tells no class apart (the gate refuses it)", labels[int(predicted_index[0])],
                       len(true_index), len(set(true_index.tolist())))

    output = paths.evaluation
    output.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({
        "path": predictions["path"],
        "actual": [labels[index] for index in true_index],
        "predicted": [labels[index] for index in predicted_index],
        "confidence": probabilities.max(axis=1).round(6),
    })
    atomic.write_parquet(paths.test_predictions, table)  # exact labels and paths, which the gate reads
    atomic.write_csv(output / "test_predictions.csv", csv_cells.safe_table(table))
    atomic.write_csv(output / "confusion_matrix.csv", csv_cells.safe_table(confusion.csv_table(pairs, labels)))
    per_class = pd.DataFrame([{"class": label, **scores} for label, scores in metrics["per_class"].items()])
    atomic.write_csv(output / "per_class.csv", csv_cells.safe_table(per_class))
    # the picture shows at most plots.MAX_DRAWN_CLASSES classes: the most confused ones when there are more
    drawn = confusion.most_confused(confusion.errors_per_class(pairs, len(labels)), plots.MAX_DRAWN_CLASSES)
    matrix = confusion.sub_matrix(pairs, drawn)
    drawn_labels = [labels[index] for index in drawn]
    support = np.bincount(true_index, minlength=len(labels))[drawn]  # each drawn row's share is of all its images
    for name, normalised in (("confusion_matrix.png", False), ("confusion_matrix_normalised.png", True)):
        plots.confusion_matrix(matrix, drawn_labels, output / name, normalised=normalised, of_classes=len(labels),
                               row_totals=support)
    plots.per_class_bars(metrics["per_class"], output / "per_class.png")
    plots.training_curves(model_folder.read_history(paths.candidate), output / "training_curves.png",
                          model_folder.read_kept_epoch(paths.candidate))
    plots.mistakes_gallery(table, stored_thumbnails(paths, max_pixels), output / "mistakes.png")
    # metrics.json (DVC's metrics, a column each in `dvc exp show`) holds the headline figures; the tables per class
    # go beside it, into a file DVC does not read as metrics
    metrics_file.write(output, metrics)
    logger.info("evaluate: accuracy %.4f, macro-F1 %.4f on %d test images; wrote %s",
                metrics["accuracy"], metrics["macro_f1"], metrics["test_images"], output)
    return metrics


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, paths = load_config()
    run(config.evaluate, config.base.seed, config.ingest.max_pixels, paths)
