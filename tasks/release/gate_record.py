"""Reads gate.json, the gate's decision, without what judging needs (NumPy, pandas, scikit-learn, the engines).

Kept apart from tasks/release/gate.py so that the commands which only move or list model folders (promote,
rollback, models) start in well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks import data_health, model_folder
from tasks.paths import Paths


def read(path: Path) -> dict[str, Any] | None:
    """gate.json, or None when there is none."""
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def is_current(paths: Paths) -> bool:
    """True when gate.json already judges this very candidate against this very production model."""
    if not paths.gate.is_file() or not model_folder.exists(paths.candidate):
        return False
    gate = read(paths.gate) or {}
    champion_now = model_folder.version_of(paths.production) if model_folder.exists(paths.production) else None
    champion_then = (gate.get("champion") or {}).get("version")
    if gate.get("promoted"):  # the candidate itself became production after that decision
        champion_then = gate["candidate"]["version"]
    same_candidate = gate["candidate"].get("version") == model_folder.version_of(paths.candidate)
    return same_candidate and champion_then == champion_now


def data_health_record(paths: Paths) -> dict[str, Any] | None:
    """What the health stage found in the data the candidate was trained on (the estimated noise rate, so that a
    candidate trained on dirtier data shows), or None when it wrote no summary."""
    summary = data_health.read_summary(paths.data_health)
    if summary is None:
        return None
    found = summary.get("label_issues") or {}
    return {"estimated_noise_rate": data_health.estimated_noise_rate(paths.data_health),
            "label_issues": found.get("issues"), "images": summary.get("images"),
            "near_duplicate_leaks": (summary.get("near_duplicates") or {}).get("leaks"),
            "outliers": (summary.get("outliers") or {}).get("outliers")}


def data_drift_record(paths: Paths) -> dict[str, Any] | None:
    """How far the images new since the last health run sit from that run's images (drift.json, in short), with its
    warning when a class's shift passed health.drift_warning; None when the health stage wrote no drift.json."""
    drift = data_health.read_drift(paths.data_health)
    if drift is None:
        return None
    return {key: drift.get(key) for key in ("status", "carried", "new_images", "overall", "largest", "threshold",
                                            "shifted", "warning")}


def check_record(name: str, passed: bool, value: float | None, threshold: float | None, detail: str) -> dict[str, Any]:
    """One check as gate.json records it."""
    return {"name": name, "passed": bool(passed), "value": value, "threshold": threshold, "detail": detail}


# The checks of the candidate on its own: what every candidate must pass, whatever production is.
OWN_CHECKS = ("export parity", "accuracy floor", "macro-F1 floor", "more than one class")


def failed_own_checks(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The candidate's own checks (the floors, export parity) that it failed: while any fails, forcing a promotion
    would ship a model below what every model must reach, so no message should suggest it."""
    return [check for check in checks if check["name"] in OWN_CHECKS and not check["passed"]]
