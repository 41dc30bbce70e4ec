"""Health stage: reads the split table, data/embeddings/ (or data/raw/ for a stand-in) and the drift reference of its
last run, writes data/reports/data_health/ (label_issues.csv, near_duplicates.csv, outliers.csv, label_issues.png,
summary.json, drift.json, drift_reference.npz).

Every run checks the labelled images from their cached features: likely label errors (cleanlab on out-of-fold
probabilities of a k-fold linear head), near-duplicates by meaning and the pairs of them that cross splits (leaks),
outliers far from every class, the class pairs most confused, and the drift of the images new since the last run
(how far they sit from that run's images of their class; tasks/health/drift.py). It warns with counts, and when the
drift passes health.drift_warning; with validate.max_label_issue_fraction set, more likely label errors than that
share fail the stage. Per image it only reads features; the fits and comparisons take seconds
(benchmarks/BENCHMARKS.md, "Data health").
DVC deletes the folder before the stage runs; its last version is linked back from DVC's cache first
(tasks/dvc_outputs.py), for the drift reference in it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks import data_health, dvc_outputs, label_sets, processed_store
from tasks.config import load_config
from tasks.health import drift, drift_reference, features, gallery, label_issues, outliers, semantic_duplicates
from tasks.params import HealthParams
from tasks.paths import Paths

logger = logging.getLogger(__name__)

DUPLICATE_COLUMNS = ["path_a", "path_b", "cosine", "label_a", "label_b", "split_a", "split_b", "leak"]
OUTLIER_COLUMNS = ["path", "label", "split", "nearest_class", "spread"]


def _label_check(params: HealthParams, seed: int, unit: np.ndarray, table: pd.DataFrame, labels: list[str],
                 multi_label: bool) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The label issues table (most likely wrong first) and its part of summary.json."""
    empty = pd.DataFrame(columns=data_health.LABEL_ISSUE_COLUMNS)
    if multi_label:
        note = "skipped: images with several labels (a multi-label project); only single-label data is checked"
        return empty, {"checked": False, "note": note, "estimated_noise_rate": None, "issues": 0}
    given = table["label_index"].to_numpy()
    found = label_issues.find(unit, given, len(labels), params.folds, seed, params.max_fit_images)
    if found is None:
        note = "skipped: fewer than two classes with at least two images"
        return empty, {"checked": False, "note": note, "estimated_noise_rate": None, "issues": 0}
    rows = table.iloc[found.analysed]
    ranked = pd.DataFrame({"path": rows["path"].to_numpy(), "given_label": rows["label"].to_numpy(),
                           "suggested_label": np.asarray(labels, dtype=object)[found.suggested],
                           "score": found.scores.round(6), "split": rows["split"].to_numpy()})
    issues = ranked[found.issues & (ranked["given_label"] != ranked["suggested_label"])]
    issues = issues.sort_values(["score", "path"], kind="stable").reset_index(drop=True)
    summary = {"checked": True, "images": len(found.analysed), "issues": len(issues),
               "fraction": round(len(issues) / max(len(table), 1), 6),
               "estimated_noise_rate": round(found.noise_rate, 6), "folds": found.folds,
               "notes": found.notes, "fit_cpu_seconds": round(found.fit_seconds, 2),
               "confused_pairs": label_issues.confused_pairs(given[found.analysed], found.suggested, labels),
               "issues_per_split": {str(key): int(value) for key, value in issues["split"].value_counts().items()}}
    return issues, summary


def _duplicates(params: HealthParams, unit: np.ndarray, table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    found = semantic_duplicates.pairs(unit, params.duplicate_cosine)
    first, second = found[:, 0].astype(int), found[:, 1].astype(int)
    a, b = table.iloc[first], table.iloc[second]
    pairs = pd.DataFrame({"path_a": a["path"].to_numpy(), "path_b": b["path"].to_numpy(),
                          "cosine": found[:, 2].round(5), "label_a": a["label"].to_numpy(),
                          "label_b": b["label"].to_numpy(), "split_a": a["split"].to_numpy(),
                          "split_b": b["split"].to_numpy()}, columns=DUPLICATE_COLUMNS[:-1])
    pairs["leak"] = pairs["split_a"] != pairs["split_b"]
    pairs = pairs.sort_values(["leak", "cosine", "path_a", "path_b"], ascending=[False, False, True, True],
                              kind="stable").reset_index(drop=True)
    in_pairs = len(set(first.tolist()) | set(second.tolist()))
    return pairs, {"threshold": params.duplicate_cosine, "pairs": len(pairs), "images": in_pairs,
                   "leaks": int(pairs["leak"].sum()),
                   "label_disagreements": int((pairs["label_a"] != pairs["label_b"]).sum())}


def _outliers(params: HealthParams, unit: np.ndarray, table: pd.DataFrame, labels: list[str],
              multi_label: bool) -> tuple[pd.DataFrame, dict[str, Any]]:
    if multi_label:
        return (pd.DataFrame(columns=OUTLIER_COLUMNS),
                {"checked": False, "note": "skipped: a multi-label project has no single class per image",
                 "outliers": 0})
    order, spread, nearest = outliers.find(unit, table["label_index"].to_numpy(), len(labels), params.outlier_spread)
    rows = table.iloc[order]
    found = pd.DataFrame({"path": rows["path"].to_numpy(), "label": rows["label"].to_numpy(),
                          "split": rows["split"].to_numpy(), "nearest_class": np.asarray(labels, dtype=object)[nearest],
                          "spread": spread.round(3)}, columns=OUTLIER_COLUMNS)
    return found, {"checked": True, "spread": params.outlier_spread, "outliers": len(found)}


def earlier_reference(folder: Path) -> tuple[drift.Reference | None, dict[str, Any] | None, str | None]:
    """(the last run's drift reference, the drift it measured, why there is none when its file cannot be read)."""
    data = data_health.read_drift_reference(folder)
    if data is None:
        return None, None, None
    try:
        reference, measured = drift_reference.decode(data)
    except ValueError as error:
        problem = (f"{folder / data_health.DRIFT_REFERENCE}: unreadable ({error}); no drift measured, the next run "
                   "compares against this one")
        logger.warning("health: %s", problem)
        return None, None, problem
    return reference, measured, None


def _drift(params: HealthParams, unit: np.ndarray, table: pd.DataFrame, labels: list[str], multi_label: bool,
           features_used: str, folder: Path) -> tuple[dict[str, Any], bytes]:
    """drift.json against the last run's reference, and the bytes of this run's reference for the next run."""
    rows = drift.class_rows(table["label"], table["label_index"].to_numpy(), labels, multi_label)
    sha256s = table["sha256"].tolist()
    current = drift.summarise(unit, rows, labels, sha256s, features_used)
    found = drift.compare(*earlier_reference(folder), current, unit, rows, labels, sha256s, params.drift_warning)
    return found, drift_reference.encode(current, found)


def check_block(max_label_issue_fraction: float | None, summary: dict[str, Any], folder: Path) -> None:
    """Raise when validate.max_label_issue_fraction is set and the share of likely label errors is above it."""
    checked = summary["label_issues"]
    if max_label_issue_fraction is None or not checked.get("checked"):
        return
    if checked["fraction"] > max_label_issue_fraction:
        raise ValueError(f"health: {checked['issues']} of {summary['images']} images ({checked['fraction']:.1%}) look "
                         f"mislabelled, more than validate.max_label_issue_fraction={max_label_issue_fraction}; "
                         f"review {folder / data_health.LABEL_ISSUES} (delete the rows you reject, then `imgpipe "
                         "relabel` gives the rest their suggested labels), or raise the key")


def run(params: HealthParams, seed: int, max_pixels: int, paths: Paths,
        max_label_issue_fraction: float | None = None) -> dict[str, Any]:
    """Check the labelled images; write the data health report; raise when the label issues are over the limit."""
    started, cpu_started = time.perf_counter(), time.process_time()
    folder = paths.data_health
    dvc_outputs.restore(paths.root, "health", [folder])  # under DVC: the last run's folder, for its drift reference
    table = processed_store.read_table(paths.processed, ["path", "label", "label_index", "split", "sha256"])
    labels = processed_store.read_labels(paths.processed)
    multi_label = label_sets.has_several(table["label"])  # then label_index is -1: the model's classes are labels
    values, kind = features.load(paths, table["path"].tolist(), table["sha256"].tolist(), max_pixels)
    unit = features.normalised(values)
    issues, issue_summary = _label_check(params, seed, unit, table, labels, multi_label)
    duplicates, duplicate_summary = _duplicates(params, unit, table)
    far, outlier_summary = _outliers(params, unit, table, labels, multi_label)
    drifted, reference = _drift(params, unit, table, labels, multi_label, features.identity(paths, kind), folder)
    shown = issues.head(params.top_shown)
    picture = gallery.draw(shown, gallery.thumbnails(paths.raw, paths.manifest, shown["path"].tolist(), max_pixels))
    summary = {"images": len(table), "classes": len(labels), "features": kind, "label_issues": issue_summary,
               "near_duplicates": duplicate_summary, "outliers": outlier_summary,
               "seconds": round(time.perf_counter() - started, 2),
               "cpu_seconds": round(time.process_time() - cpu_started, 2)}
    data_health.write(folder, {data_health.LABEL_ISSUES: issues, data_health.NEAR_DUPLICATES: duplicates,
                               data_health.OUTLIERS: far}, summary,
                      {data_health.GALLERY: picture, data_health.DRIFT_REFERENCE: reference}, drifted)
    _log(summary, Path(paths.shown(folder)))  # relative to the project in the log
    _log_drift(drifted)
    check_block(max_label_issue_fraction, summary, folder)
    return summary


def _log(summary: dict[str, Any], folder: Path) -> None:
    checked, pairs, far = summary["label_issues"], summary["near_duplicates"], summary["outliers"]
    if checked.get("checked") and checked["issues"]:
        logger.warning("health: %d of %d images look mislabelled (estimated noise rate %.1f%%); see %s",
                       checked["issues"], summary["images"], 100 * checked["estimated_noise_rate"],
                       folder / data_health.LABEL_ISSUES)
    elif not checked.get("checked"):
        logger.info("health: label check %s", checked["note"])
    if pairs["leaks"]:
        logger.warning("health: %d near-duplicate pairs (cosine >= %s) lie in different splits (leaks); see %s",
                       pairs["leaks"], pairs["threshold"], folder / data_health.NEAR_DUPLICATES)
    if far["outliers"]:
        logger.warning("health: %d images lie far from every class; see %s", far["outliers"],
                       folder / data_health.OUTLIERS)
    logger.info("health: %d images (%s): %d likely label errors, %d near-duplicate pairs (%d leaks), %d outliers; "
                "%.1f s", summary["images"], summary["features"], checked.get("issues", 0), pairs["pairs"],
                pairs["leaks"], far["outliers"], summary["seconds"])


def _log_drift(found: dict[str, Any]) -> None:
    if found["warning"]:
        logger.warning("health: %s", found["warning"])
    elif found["overall"] is not None:
        logger.info("health: drift: %s; overall shift %.2f (largest: %s %.2f; health.drift_warning=%s)",
                    found["note"], found["overall"], found["largest"]["class"], found["largest"]["shift"],
                    found["threshold"])
    else:
        logger.info("health: drift: %s", found["note"])


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, paths = load_config()
    run(config.health, config.base.seed, config.ingest.max_pixels, paths, config.validation.max_label_issue_fraction)
