"""Promotion and rollback: reads the candidate and gate.json, writes data/models/production/ and the registry history.

The registry's history.jsonl is the one record of which model is in production, and each change is one atomic
rename of it (the commit point). The registry folder of the new version is written before it, the production
folder is made to follow it after: a run killed at any point leaves either the old state or a committed change
that `recover` (called under the run lock at the start of every promotion, rollback and training run) finishes,
along with removing what the interrupted copy left behind.
"""

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
from tasks.release import kill_point, leftovers
from tasks.release.gate_record import is_current

logger = logging.getLogger(__name__)

VERSION_FILE = "version.json"  # in the production folder: which registry version it is a copy of


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


def _commit(paths: Paths, event: dict[str, Any]) -> None:
    """Append `event` to the history: one atomic rename, after which the change counts as made."""
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


def current_version(paths: Paths) -> str | None:
    stack = active_versions(read_history(paths))
    return stack[-1] if stack else None


def installed_version(paths: Paths) -> str | None:
    """The registry version the production folder holds a copy of, or None when it holds none."""
    try:
        version = json.loads((paths.production / VERSION_FILE).read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) and model_folder.exists(paths.production) else None


def _install(paths: Paths, version: str) -> None:
    """Make the production folder a copy of registry/<version> (built beside it, then renamed into place)."""
    source = paths.registry / version
    if not model_folder.exists(source):
        raise ValueError(f"{source}: missing, but {_history_file(paths)} says version {version} is in production; "
                         "restore the registry (`dvc checkout data/models/registry.dvc`, or `dvc pull`), then run "
                         "again")
    with atomic.atomic_directory(paths.production) as building:
        shutil.copytree(source, building, dirs_exist_ok=True)
        atomic.write_json(building / VERSION_FILE, {"version": version})


def _register(paths: Paths, version: str) -> None:
    """Copy the candidate into registry/<version>, whole or not at all."""
    target = paths.registry / version
    if not model_folder.exists(target):
        with atomic.atomic_directory(target) as building:
            shutil.copytree(paths.candidate, building, dirs_exist_ok=True)


def recover(paths: Paths) -> list[str]:
    """Finish or undo what a killed promotion or rollback left; return what was repaired (nothing, usually).

    The history decides: production is made a copy of the version it names, registry versions it never names
    (copied by a promotion killed before its commit) are removed, and so are half-copied folders.
    Call it while holding the run lock.
    """
    history = read_history(paths)
    repairs = [f"removed {folder.name}" for folder in leftovers.remove([paths.production])]
    if paths.registry.is_dir():
        promoted = {event["version"] for event in history if event["action"] == "promote"}
        repairs += [f"removed {folder.name}" for folder in leftovers.remove_within(paths.registry)]
        for folder in [item for item in paths.registry.iterdir() if item.is_dir() and not item.name.startswith(".")]:
            if folder.name not in promoted:
                shutil.rmtree(folder)
                repairs.append(f"removed registry version {folder.name}, which no promotion recorded")
    current = current_version(paths)
    if current is not None and installed_version(paths) != current:
        _install(paths, current)
        repairs.append(f"installed version {current} in production, as the history says")
    if current is not None and paths.gate.is_file():
        gate = json.loads(paths.gate.read_text(encoding="utf-8"))
        if not gate.get("promoted") and gate.get("candidate", {}).get("version") == current and \
                history[-1]["action"] == "promote" and history[-1]["version"] == current:
            atomic.write_json(paths.gate, gate | {"promoted": True})
            repairs.append(f"recorded the promotion of {current} in {paths.gate.name}")
    for repair in repairs:
        logger.warning("finishing an interrupted promotion or rollback: %s", repair)
    return repairs


def promote(paths: Paths, reason: str, force: bool = False, requested_by: str | None = None) -> dict[str, Any]:
    """Make the candidate the production model: allowed by a passing gate, or forced with a reason.

    Call it while holding the run lock.
    """
    recover(paths)
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
    _register(paths, version)
    kill_point.reached("promote:registered")
    event = {
        "action": "promote", "version": version, "forced": force,
        "gate_decision": gate["decision"] if gate_is_current else None, "reason": reason,
        "requested_by": requested_by or getpass.getuser(), "at": _now().isoformat(timespec="seconds"),
        "metrics": (gate or {}).get("candidate", {}).get("metrics") if gate_is_current else None,
    }
    _commit(paths, event)
    kill_point.reached("promote:committed")
    _install(paths, version)
    if gate_is_current:
        atomic.write_json(paths.gate, gate | {"promoted": True})
    logger.info("promoted %s to %s (%s)", version, paths.production, reason)
    return event


def rollback(paths: Paths, reason: str, requested_by: str | None = None) -> dict[str, Any]:
    """Put the previous production model back. Call it while holding the run lock."""
    recover(paths)
    stack = active_versions(read_history(paths))
    if len(stack) < 2:
        raise ValueError(f"{_history_file(paths)}: no earlier production model to roll back to")
    restored = stack[-2]
    event = {"action": "rollback", "version": stack[-1], "restored": restored, "reason": reason,
             "requested_by": requested_by or getpass.getuser(), "at": _now().isoformat(timespec="seconds")}
    _commit(paths, event)
    kill_point.reached("rollback:committed")
    _install(paths, restored)
    logger.info("rolled production back from %s to %s (%s)", stack[-1], restored, reason)
    return event
