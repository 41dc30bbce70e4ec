"""Promotion and rollback: reads the candidate and gate.json, writes data/models/production/ and the registry history."""

from __future__ import annotations

import datetime
import getpass
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from tasks import atomic, model_folder
from tasks.config import ArgumentError
from tasks.paths import Paths
from tasks.release.gate import is_current

logger = logging.getLogger(__name__)


class PromotionRefused(ValueError):
    """Promotion was asked for but the gate did not allow it (and it was not forced)."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _history_file(paths: Paths) -> Path:
    return paths.registry / "history.jsonl"


def read_history(paths: Paths) -> list[dict[str, Any]]:
    path = _history_file(paths)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _append_history(paths: Paths, event: dict[str, Any]) -> None:
    atomic.write_text(_history_file(paths), "".join(json.dumps(item, sort_keys=True) + "\n"
                                                    for item in [*read_history(paths), event]))


def active_versions(history: list[dict[str, Any]]) -> list[str]:
    """The production versions as a stack: a promotion pushes, a rollback pops; the last one is live."""
    stack: list[str] = []
    for event in history:
        if event["action"] == "promote":
            stack.append(event["version"])
        elif event["action"] == "rollback" and stack:
            stack.pop()
    return stack


def _install(paths: Paths, version: str) -> None:
    with atomic.atomic_directory(paths.production) as building:
        shutil.copytree(paths.registry / version, building, dirs_exist_ok=True)
        atomic.write_json(building / "version.json", {"version": version})


def current_version(paths: Paths) -> str | None:
    stack = active_versions(read_history(paths))
    return stack[-1] if stack else None


def promote(paths: Paths, reason: str, force: bool = False, requested_by: str | None = None) -> dict[str, Any]:
    """Make the candidate the production model: allowed by a passing gate, or forced with a reason."""
    if not model_folder.exists(paths.candidate):
        raise ValueError(f"{paths.candidate}: no candidate model; the train stage writes one")
    version = model_folder.version_of(paths.candidate)
    rolled_back = [event for event in read_history(paths)
                   if event["action"] == "rollback" and event.get("version") == version]
    if rolled_back and not force:
        raise PromotionRefused(f"this candidate ({version}) was rolled back at {rolled_back[-1]['at']} "
                               f"({rolled_back[-1]['reason']}); retrain, or force the promotion with a reason")
    gate = json.loads(paths.gate.read_text(encoding="utf-8")) if paths.gate.is_file() else None
    gate_is_current = gate is not None and is_current(paths)
    if not force:
        if not gate_is_current:
            raise PromotionRefused(f"{paths.gate}: no gate decision for this candidate; run the gate first "
                                   "(or force the promotion with a reason)")
        if gate["decision"] != "pass":
            raise PromotionRefused(f"the gate refused this candidate: {gate['sentence']} "
                                   "To promote it anyway, force the promotion with a reason.")
    elif not reason.strip():
        raise ArgumentError("a forced promotion (`force`) needs a `reason` saying why the gate is overruled")
    if current_version(paths) == version:
        raise ValueError(f"the candidate ({version}) is already the production model")
    if not (paths.registry / version).is_dir():
        shutil.copytree(paths.candidate, paths.registry / version)
    _install(paths, version)
    event = {
        "action": "promote", "version": version, "forced": force,
        "gate_decision": gate["decision"] if gate_is_current else None, "reason": reason,
        "requested_by": requested_by or getpass.getuser(), "at": _now().isoformat(timespec="seconds"),
        "metrics": (gate or {}).get("candidate", {}).get("metrics") if gate_is_current else None,
    }
    _append_history(paths, event)
    if gate_is_current:
        atomic.write_json(paths.gate, gate | {"promoted": True})
    logger.info("promoted %s to %s (%s)", version, paths.production, reason)
    return event


def rollback(paths: Paths, reason: str, requested_by: str | None = None) -> dict[str, Any]:
    """Put the previous production model back."""
    stack = active_versions(read_history(paths))
    if len(stack) < 2:
        raise ValueError(f"{_history_file(paths)}: no earlier production model to roll back to")
    restored = stack[-2]
    _install(paths, restored)
    event = {"action": "rollback", "version": stack[-1], "restored": restored, "reason": reason,
             "requested_by": requested_by or getpass.getuser(), "at": _now().isoformat(timespec="seconds")}
    _append_history(paths, event)
    logger.info("rolled production back from %s to %s (%s)", stack[-1], restored, reason)
    return event
