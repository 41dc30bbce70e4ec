"""Gate: reads the candidate, its test results and the production model, writes data/reports/evaluation/gate.json."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks import atomic, model_folder, pool, stored_images
from tasks.evaluate import metrics as metric_functions
from tasks.params import GateParams
from tasks.paths import Paths

logger = logging.getLogger(__name__)

PARITY_IMAGES = 32
PREDICT_BATCH = 256


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _decode_stored(info: model_folder.ModelInfo, images: list[stored_images.Job], raw: Path,
                   max_pixels: int) -> Iterator[np.ndarray]:
    """The pixels of stored images as a model saw them in training (its card's size and resize policy)."""
    return pool.ordered_map(stored_images.Decoder(raw, info.image_size, info.resize, max_pixels), images)


def predict_stored(folder: Path, images: list[stored_images.Job], raw: Path, max_pixels: int) -> np.ndarray:
    """Class probabilities of a saved model for stored images, decoded at the model's own size and resize policy."""
    info = model_folder.read_info(folder)
    network = model_folder.load(folder)
    batches, batch = [], []
    for pixels in _decode_stored(info, images, raw, max_pixels):
        batch.append(pixels)
        if len(batch) == PREDICT_BATCH:
            batches.append(np.asarray(network.predict_on_batch(np.stack(batch))))
            batch = []
    if batch:
        batches.append(np.asarray(network.predict_on_batch(np.stack(batch))))
    return np.concatenate(batches) if batches else np.zeros((0, len(info.labels)))


def export_parity(folder: Path, images: list[stored_images.Job], raw: Path, max_pixels: int) -> float:
    """Largest absolute difference between the SavedModel export's and the .keras model's probabilities."""
    import tensorflow as tf

    pixels = np.stack(list(_decode_stored(model_folder.read_info(folder), images[:PARITY_IMAGES], raw, max_pixels)))
    expected = model_folder.load(folder).predict(pixels, verbose=0)
    exported = tf.saved_model.load(str(folder / model_folder.SAVED_MODEL_FOLDER))  # keep it: it owns the variables
    served = exported.serve(tf.constant(pixels)).numpy()
    return float(np.abs(served - expected).max())


def _check(name: str, passed: bool, value: float | None, threshold: float | None, detail: str) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "value": value, "threshold": threshold, "detail": detail}


def compare_with_champion(params: GateParams, seed: int, labels: list[str], table: pd.DataFrame,
                          champion_dir: Path, stored: list[stored_images.Job], raw: Path, max_pixels: int
                          ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Non-inferiority of the headline metric (paired bootstrap) and per-class recall, on the same test images."""
    champion_labels = model_folder.read_labels(champion_dir)
    probabilities = predict_stored(champion_dir, stored, raw, max_pixels)
    index_of = {label: index for index, label in enumerate(labels)}
    # a class the champion never knew counts as a wrong answer for it
    champion_index = np.array([index_of.get(champion_labels[i], -1) for i in probabilities.argmax(axis=1)])
    true_index = table["actual"].map(index_of).to_numpy()
    candidate_index = table["predicted"].map(index_of).to_numpy()
    champion_scored = np.where(champion_index < 0, (true_index + 1) % max(len(labels), 2), champion_index)
    difference, interval = metric_functions.paired_difference(true_index, candidate_index, champion_scored,
                                                              len(labels), params.metric, seed)
    checks = [_check(
        f"{params.metric} not worse than production", interval[0] >= -params.tolerance, difference, -params.tolerance,
        f"candidate minus production {params.metric}: {difference:+.4f}, 95% interval "
        f"[{interval[0]:+.4f}, {interval[1]:+.4f}]; its lower end must stay above -{params.tolerance}",
    )]
    for label in labels:
        actual = true_index == index_of[label]
        if not actual.any():
            continue
        candidate_recall = float((candidate_index[actual] == index_of[label]).mean())
        champion_recall = float((champion_scored[actual] == index_of[label]).mean())
        drop = champion_recall - candidate_recall
        checks.append(_check(
            f"recall of '{label}'", drop <= params.max_recall_drop, drop, params.max_recall_drop,
            f"recall {champion_recall:.3f} -> {candidate_recall:.3f} (drop {drop:+.3f}, at most "
            f"{params.max_recall_drop} allowed)",
        ))
    champion_metrics = metric_functions.compute_metrics(true_index, np.eye(max(len(labels), 1))[champion_scored],
                                                        labels, len(labels), seed)
    summary = {"version": model_folder.version_of(champion_dir),
               "metrics": {key: champion_metrics[key] for key in ("accuracy", "macro_f1", "weighted_f1")},
               "difference": {"metric": params.metric, "value": difference, "interval": interval}}
    return checks, summary


def floor_checks(params: GateParams, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        _check("accuracy floor", metrics["accuracy"] >= params.min_accuracy, metrics["accuracy"], params.min_accuracy,
               f"test accuracy {metrics['accuracy']:.4f}, at least {params.min_accuracy} required "
               "(evaluate.gate.min_accuracy)"),
        _check("macro-F1 floor", metrics["macro_f1"] >= params.min_macro_f1, metrics["macro_f1"],
               params.min_macro_f1, f"test macro-F1 {metrics['macro_f1']:.4f}, at least {params.min_macro_f1} "
               "required (evaluate.gate.min_macro_f1)"),
    ]


def _sentence(passed: bool, champion: dict[str, Any] | None, checks: list[dict[str, Any]]) -> str:
    failed = [check for check in checks if not check["passed"]]
    against = "the production model" if champion else "the minimum scores (no production model yet)"
    if passed:
        return f"The candidate passed all {len(checks)} checks against {against} and may be promoted."
    reasons = "; ".join(f"{check['name']}: {check['detail']}" for check in failed[:3])
    more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
    return f"The candidate was refused against {against}: {reasons}{more}. Production is unchanged."


def run(params: GateParams, seed: int, max_pixels: int, paths: Paths) -> dict[str, Any]:
    """Decide whether the candidate may replace production; write gate.json whatever the decision."""
    metrics = _read_json(paths.evaluation / "metrics.json")
    labels = model_folder.read_labels(paths.candidate)
    table = pd.read_csv(paths.evaluation / "test_predictions.csv", keep_default_na=False,
                        dtype={"actual": str, "predicted": str})
    stored = stored_images.jobs_for(paths.manifest, table["path"].tolist())  # the test images, from the raw store
    difference = export_parity(paths.candidate, stored, paths.raw, max_pixels)
    checks = [_check("export parity", difference <= params.max_export_difference, difference,
                     params.max_export_difference,
                     f"SavedModel and .keras probabilities differ by at most {difference:.2e} on "
                     f"{min(len(table), PARITY_IMAGES)} test images")]
    champion = None
    if model_folder.exists(paths.production):
        champion_checks, champion = compare_with_champion(params, seed, labels, table, paths.production, stored,
                                                          paths.raw, max_pixels)
        checks += champion_checks
    else:
        checks += floor_checks(params, metrics)
    passed = all(check["passed"] for check in checks)
    gate = {
        "decision": "pass" if passed else "fail",
        "sentence": _sentence(passed, champion, checks),
        "headline_metric": params.metric,
        "tolerance": params.tolerance,
        "candidate": {"version": model_folder.version_of(paths.candidate),
                      "metrics": {key: metrics.get(key) for key in
                                  ("accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "weighted_f1", "ece")}},
        "champion": champion,
        "checks": checks,
        "promoted": False,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic.write_json(paths.gate, gate)
    logger.info("gate: %s", gate["sentence"])
    return gate


def is_current(paths: Paths) -> bool:
    """True when gate.json already judges this very candidate against this very production model."""
    if not paths.gate.is_file() or not model_folder.exists(paths.candidate):
        return False
    gate = _read_json(paths.gate)
    champion_now = model_folder.version_of(paths.production) if model_folder.exists(paths.production) else None
    champion_then = (gate.get("champion") or {}).get("version")
    if gate.get("promoted"):  # the candidate itself became production after that decision
        champion_then = gate["candidate"]["version"]
    return gate["candidate"].get("version") == model_folder.version_of(paths.candidate) and champion_then == champion_now
