"""Gate: reads the candidate, its exports, its test results and the production model, writes
data/reports/evaluation/gate.json."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks import atomic, label_sets, metrics_file, model_folder, stored_images
from tasks.params import GateParams
from tasks.paths import Paths
from tasks.release import lineage as data_lineage
from tasks.release.export_parity import export_check, predict_stored
from tasks.release.gate_record import check_record, data_drift_record, data_health_record, failed_own_checks
from tasks.release.gate_record import is_current  # noqa: F401  (callers ask the gate whether it is current)
from tasks.scoring import metrics as metric_functions
from tasks.scoring import multilabel, selection

logger = logging.getLogger(__name__)



def compare_label_sets(candidate_labels: list[str], champion_labels: list[str]) -> dict[str, Any]:
    """Both label sets, and what the candidate added or removed: models of different label sets do different tasks."""
    added = sorted(set(candidate_labels) - set(champion_labels))
    removed = sorted(set(champion_labels) - set(candidate_labels))
    return {"candidate": list(candidate_labels), "production": list(champion_labels), "same": not added and not removed,
            "added": added, "removed": removed}


def _label_names(labels: list[str], most: int = 12) -> str:
    shown = ", ".join(repr(label) for label in labels[:most])
    return shown + (f" and {len(labels) - most} more" if len(labels) > most else "")


def label_set_check(compared: dict[str, Any]) -> dict[str, Any]:
    changes = [f"{what} {_label_names(compared[key])}" for key, what in (("added", "adds"), ("removed", "drops"))
               if compared[key]]
    detail = (f"production knows {len(compared['production'])} labels, the candidate "
              f"{len(compared['candidate'])}" + (f"; the candidate {' and '.join(changes)}" if changes else ""))
    return check_record("same label set as production", compared["same"], None, None, detail)


def compare_multi_label(params: GateParams, seed: int, labels: list[str], table: pd.DataFrame,
                        champion_dir: Path, probabilities: np.ndarray) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """compare_with_champion for a multi-label candidate: the headline metric over label sets (macro-F1 by default)
    and each label's F1 (class_check). The champion's label sets come from its own thresholds (a single-label champion: its
    top-1 label); a label the champion does not know counts as never given by it."""
    champion = model_folder.read_info(champion_dir)
    if champion.multi_label:
        champion_cells = label_sets.cells_from(label_sets.decide(probabilities, champion.thresholds), champion.labels)
    else:
        champion_cells = [champion.labels[index] for index in probabilities.argmax(axis=1)]
    truth = label_sets.multi_hot(table["actual"], labels).astype(bool)
    candidate = label_sets.multi_hot(table["predicted"], labels).astype(bool)
    champion_sets = label_sets.multi_hot(champion_cells, labels, strict=False).astype(bool)
    difference, interval = multilabel.paired_difference(truth, candidate, champion_sets, params.metric, seed)
    checks = [_non_inferiority(params, difference, interval)]
    for position, label in enumerate(labels):
        if truth[:, position].any():
            checks.append(class_check(params, label, truth[:, position], champion_sets[:, position],
                                      candidate[:, position]))
    summary = {"version": champion.version,
               "metrics": {metric: multilabel.score(truth, champion_sets, metric) for metric in multilabel.METRICS},
               "difference": {"metric": params.metric, "value": difference, "interval": interval}}
    return checks, summary


def _non_inferiority(params: GateParams, difference: float, interval: list[float]) -> dict[str, Any]:
    return check_record(
        f"{params.metric} not worse than production", interval[0] >= -params.tolerance, difference, -params.tolerance,
        f"candidate minus production {params.metric}: {difference:+.4f}, 95% interval "
        f"[{interval[0]:+.4f}, {interval[1]:+.4f}]; its lower end must stay above -{params.tolerance}",
    )


def _precision_recall_f1(actual: np.ndarray, given: np.ndarray) -> tuple[float, float, float]:
    """One class's precision, recall and F1; `actual` and `given` hold one boolean per test image."""
    hits, actual_count, given_count = int(np.sum(actual & given)), int(actual.sum()), int(given.sum())
    precision = hits / given_count if given_count else 0.0
    recall = hits / actual_count if actual_count else 0.0
    f1 = 2 * hits / (actual_count + given_count) if actual_count + given_count else 0.0
    return precision, recall, f1


def everywhere_f1(actual: np.ndarray) -> float:
    """The F1 of a model that gives this class to every image: precision is the class's share, recall 1."""
    share = float(actual.mean()) if actual.size else 0.0
    return 2 * share / (1 + share)


def class_check(params: GateParams, label: str, actual: np.ndarray, champion: np.ndarray,
                candidate: np.ndarray) -> dict[str, Any]:
    """The change in one class's F1, judged only where production is credible on that class.

    Recall alone rewards a model that gives a class to every image (recall 1.0), and a production model that is
    poor on a class gives no standard to hold the candidate to there. So a drop in F1 of more than
    max_class_f1_drop fails only where production's F1 on the class reaches min_production_class_f1 and beats what
    giving the class to every image scores; elsewhere the check is recorded as not judged, and the headline
    interval decides. `actual`, `champion` and `candidate` hold one boolean per test image.
    """
    champion_precision, champion_recall, champion_f1 = _precision_recall_f1(actual, champion)
    candidate_precision, candidate_recall, candidate_f1 = _precision_recall_f1(actual, candidate)
    drop = champion_f1 - candidate_f1
    change = (f"F1 {champion_f1:.3f} -> {candidate_f1:.3f} ({_change_words(drop)}); recall {champion_recall:.3f} "
              f"-> {candidate_recall:.3f}, precision {champion_precision:.3f} -> {candidate_precision:.3f}")
    trivial = everywhere_f1(actual)
    if champion_f1 < params.min_production_class_f1 or champion_f1 <= trivial + 1e-9:
        why = (f"no better than giving '{label}' to every image ({trivial:.3f})" if champion_f1 <= trivial + 1e-9
               else f"below evaluate.gate.min_production_class_f1 ({params.min_production_class_f1})")
        return check_record(f"F1 of '{label}'", True, drop, None,
                            f"not judged: production's F1 on '{label}' is {champion_f1:.3f}, {why}, so the headline "
                            f"interval decides; {change}")
    return check_record(f"F1 of '{label}'", drop <= params.max_class_f1_drop, drop, params.max_class_f1_drop,
                        f"{change}; a drop in F1 of at most {params.max_class_f1_drop} allowed "
                        "(evaluate.gate.max_class_f1_drop)")


def compare_with_champion(params: GateParams, seed: int, labels: list[str], table: pd.DataFrame,
                          champion_dir: Path, stored: list[stored_images.Job], raw: Path, max_pixels: int,
                          multi_label: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Non-inferiority of the headline metric (paired bootstrap) and each class's F1 (class_check), on the same test
    images.

    Only for a champion with the candidate's label set (in any order): scores of different tasks do not compare.
    """
    champion_labels = model_folder.read_labels(champion_dir)
    if set(champion_labels) != set(labels):
        raise ValueError(f"{champion_dir}: its label set differs from the candidate's; compare label sets first")
    probabilities = predict_stored(champion_dir, stored, raw, max_pixels)
    if multi_label:
        return compare_multi_label(params, seed, labels, table, champion_dir, probabilities)
    index_of = {label: index for index, label in enumerate(labels)}
    champion_index = np.array([index_of[champion_labels[i]] for i in probabilities.argmax(axis=1)], dtype=int)
    true_index = table["actual"].map(index_of).to_numpy()
    candidate_index = table["predicted"].map(index_of).to_numpy()
    difference, interval = metric_functions.paired_difference(true_index, candidate_index, champion_index,
                                                              len(labels), params.metric, seed)
    checks = [_non_inferiority(params, difference, interval)]
    for label in labels:
        actual = true_index == index_of[label]
        if actual.any():
            checks.append(class_check(params, label, actual, champion_index == index_of[label],
                                      candidate_index == index_of[label]))
    champion_metrics = metric_functions.compute_metrics(true_index, np.eye(max(len(labels), 1))[champion_index],
                                                        labels, len(labels), seed)
    summary = {"version": model_folder.version_of(champion_dir),
               "metrics": {key: champion_metrics[key] for key in ("accuracy", "macro_f1", "weighted_f1")},
               "difference": {"metric": params.metric, "value": difference, "interval": interval}}
    return checks, summary


def _change_words(drop: float) -> str:
    """`drop 0.154`, `rise 0.154` or `no change`: a fall is a drop, never a negative rise (or vice versa)."""
    if abs(drop) < 5e-4:
        return "no change"
    return f"{'drop' if drop > 0 else 'rise'} {abs(drop):.3f}"


def floor_checks(params: GateParams, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The minimum scores for a first model. A multi-label model's accuracy (every label of an image right) is no
    measure of usefulness with many labels, so it meets the macro-F1 floor alone."""
    checks = [
        check_record("accuracy floor", metrics["accuracy"] >= params.min_accuracy, metrics["accuracy"],
                     params.min_accuracy, f"test accuracy {metrics['accuracy']:.4f}, at least {params.min_accuracy} "
                     "required (evaluate.gate.min_accuracy)"),
        check_record("macro-F1 floor", metrics["macro_f1"] >= params.min_macro_f1, metrics["macro_f1"],
                     params.min_macro_f1, f"test macro-F1 {metrics['macro_f1']:.4f}, at least {params.min_macro_f1} "
                     "required (evaluate.gate.min_macro_f1)"),
    ]
    return checks[1:] if metrics.get("task") == label_sets.MULTI_LABEL else checks


def spread_check(table: pd.DataFrame) -> list[dict[str, Any]]:
    """A single-label candidate that names one class for every test image of a test split holding several classes
    has learnt nothing that tells them apart, whatever its accuracy (a 2-class test split of 90% one class gives 0.9)
    and however narrow its validation interval: it fails. No check when the test split holds one class."""
    if "actual" not in table.columns or table["actual"].nunique() < 2:
        return []
    named = table["predicted"].nunique()
    only = str(table["predicted"].iloc[0]) if len(table) else ""
    detail = (f"names {named} classes on a test split of {table['actual'].nunique()}" if named > 1 else
              f"names {only!r} for every one of the {len(table)} test images, which hold "
              f"{table['actual'].nunique()} classes: it tells no class apart; look at the training data and params")
    return [check_record("more than one class", named > 1, float(named), 2.0, detail)]


def split_notes(folder: Path, metrics: dict[str, Any], metric: str) -> list[str]:
    """Which split is too small for a decision: the validation split (train's note in the model card) and the test
    split (the 95% interval of the headline metric in metrics.json wider than selection.WIDEST_DECISIVE_INTERVAL)."""
    notes = []
    validation_note = model_folder.read_card(folder).get("validation", {}).get("note")
    if validation_note:
        notes.append(validation_note)
    interval = metrics.get(f"{metric}_ci")
    if interval:
        test_note = selection.interval_note("test", metric, interval, int(metrics.get("test_images", 0)))
        if test_note:
            notes.append(test_note)
    for note in notes:
        logger.warning("gate: %s", note)
    return notes


def _sentence(passed: bool, champion: dict[str, Any] | None, checks: list[dict[str, Any]],
              compared: dict[str, Any] | None) -> str:
    failed = [check for check in checks if not check["passed"]]
    against = "the minimum scores and the production model" if champion else \
        "the minimum scores (no production model yet)"
    if passed:
        return f"The candidate passed all {len(checks)} checks against {against} and may be promoted."
    if compared is not None and not compared["same"]:
        others = failed_own_checks(checks)
        if others:  # forcing would overrule these too: never advise it for a candidate under a floor
            advice = (f" It also fails what every candidate must pass, so do not force it either: "
                      f"{'; '.join(check['name'] + ': ' + check['detail'] for check in others)}. Improve the "
                      "candidate and run again.")
        else:
            advice = (" It passes the floors and the export checks: if the new label set is intended, accept it "
                      "with imgpipe promote, given `force` and a `reason` saying why.")
        return (f"The candidate was refused: its label set differs from the production model's "
                f"({label_set_check(compared)['detail']}), so the two models do different tasks and their scores "
                f"cannot be compared. Production is unchanged.{advice}")
    reasons = "; ".join(f"{check['name']}: {check['detail']}" for check in failed[:3])
    more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
    return f"The candidate was refused against {against}: {reasons}{more}. Production is unchanged."


def run(params: GateParams, seed: int, max_pixels: int, paths: Paths) -> dict[str, Any]:
    """Decide whether the candidate may replace production; write gate.json whatever the decision.

    Every candidate must reach the floors (min_accuracy, min_macro_f1). With a production model, the label sets
    come first: a candidate of another label set is refused (a person may accept it with a forced promotion);
    with the same label set it must also be no worse than production on the same test images.
    """
    metrics = metrics_file.read(paths.evaluation)  # plain names: accuracy, macro_f1_ci
    labels = model_folder.read_labels(paths.candidate)
    multi_label = model_folder.read_info(paths.candidate).multi_label
    table = pd.read_parquet(paths.test_predictions)  # exact: the CSV beside it is escaped for spreadsheets
    stored = stored_images.jobs_for(paths.manifest, table["path"].tolist())  # the test images, from the raw store
    parity, exports = export_check(params, paths.candidate, paths.candidate_exports, stored, paths.raw, max_pixels)
    checks = [parity]
    checks += floor_checks(params, metrics)
    checks += spread_check(table) if not multi_label else []
    champion, compared = None, None
    if model_folder.exists(paths.production):
        compared = compare_label_sets(labels, model_folder.read_labels(paths.production))
        checks.append(label_set_check(compared))
        if compared["same"]:
            champion_checks, champion = compare_with_champion(params, seed, labels, table, paths.production, stored,
                                                              paths.raw, max_pixels, multi_label)
            checks += champion_checks
        else:  # no scores: the production model cannot be scored on classes it never knew
            champion = {"version": model_folder.version_of(paths.production), "metrics": None, "difference": None}
    passed = all(check["passed"] for check in checks)
    lineage = data_lineage.compare(model_folder.read_card(paths.candidate), model_folder.read_card(paths.production)
                                   if model_folder.exists(paths.production) else None)
    notes = split_notes(paths.candidate, metrics, params.metric)
    if lineage["note"]:
        logger.warning("gate: %s", lineage["note"])
        notes.append(lineage["note"])
    drift = data_drift_record(paths)
    if drift and drift.get("warning"):  # a warning, not a check: new images labelled right are right to learn from
        logger.warning("gate: %s", drift["warning"])
        notes.append(drift["warning"])
    gate = {
        "decision": "pass" if passed else "fail",
        "sentence": _sentence(passed, champion, checks, compared) + "".join(f" Note: {note}." for note in notes),
        "notes": notes,
        "headline_metric": params.metric,
        "tolerance": params.tolerance,
        "candidate": {"version": model_folder.version_of(paths.candidate),
                      "metrics": {key: metrics.get(key) for key in
                                  ("accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "weighted_f1", "ece",
                                   "micro_f1", "mean_average_precision") if key in metrics}},
        "champion": champion,
        "label_sets": compared,
        "lineage": lineage,  # both models' data: source, manifest and data hashes, label set; grown or other data
        "data_health": data_health_record(paths),  # the estimated label noise of the data; null without the stage
        "data_drift": drift,  # the shift of the images new since the last health run, its warning; null without it
        "checks": checks,
        "exports": exports,
        "fit_to_force": not failed_own_checks(checks),  # only the comparison with production refused it
        "promoted": False,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic.write_json(paths.gate, gate)
    logger.info("gate: %s", gate["sentence"])
    return gate
