"""Promotion and rollback: reads the candidate, its exports and gate.json, writes data/models/production/ and the
registry (each version one model folder: the candidate joined with its exports) and its history.

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

from tasks import atomic, export_folder, kill_point, leftovers, model_folder, registry
from tasks.config import ArgumentError
from tasks.paths import Paths
from tasks.release import gate_record

logger = logging.getLogger(__name__)

# the registry's record, read by tasks/registry.py (predict reads the committed pointer there too)
read_history, active_versions = registry.read_history, registry.active_versions
current_version, installed_version = registry.current_version, registry.installed_version


class PromotionRefused(ValueError):
    """Promotion was asked for but the gate did not allow it (and it was not forced)."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _history_file(paths: Paths) -> Path:
    return registry.history_file(paths)


def _commit(paths: Paths, event: dict[str, Any]) -> None:
    """Append `event` to the history: one atomic rename, after which the change counts as made. The lines before
    it are kept as they are, a damaged one too (it is named on every read until someone fixes it)."""
    path = _history_file(paths)
    before = path.read_text(encoding="utf-8") if path.is_file() else ""
    if before and not before.endswith("\n"):
        before += "\n"
    atomic.write_text(path, before + json.dumps(event, sort_keys=True) + "\n")


def _install(paths: Paths, version: str) -> None:
    """Make the production folder a copy of registry/<version> (built beside it, then renamed into place)."""
    source = paths.registry / version
    if not model_folder.exists(source):
        raise ValueError(f"{source}: missing, but {_history_file(paths)} says version {version} is in production; "
                         "restore the registry (`dvc checkout data/models/registry.dvc`, or `dvc pull`), then run "
                         "again")
    with atomic.atomic_directory(paths.production) as building:
        shutil.copytree(source, building, dirs_exist_ok=True)
        model_folder.write_installed_version(building, version)


def _register(paths: Paths, version: str) -> None:
    """Copy the candidate joined with its exports into registry/<version> (one model folder, one checksums.json),
    whole or not at all."""
    target = paths.registry / version
    if not model_folder.exists(target):
        with atomic.atomic_directory(target) as building:
            export_folder.join(paths.candidate, paths.candidate_exports, building)


def _kept_reason(paths: Paths, history: registry.History, version: str) -> str | None:
    """Why the registry version `version`, which no promotion in the history names, must stay; None when it is
    only the copy a promotion killed before its commit made of the candidate (which still holds it)."""
    if not history.exists:
        return f"{history.path} is missing, so nothing says which versions were promoted"
    if history.damaged:
        return f"{history.path} has lines that cannot be read ({'; '.join(history.damaged)})"
    if any(version in (event.get("version"), event.get("restored")) for event in history.events):
        return f"{history.path} names it"
    if installed_version(paths) == version:
        return f"{paths.production} holds it ({model_folder.VERSION_FILE})"
    named = registry.versions_in_dvc(paths)
    if named is None or version in named:
        return f"{registry.dvc_file(paths)} names it" if named is not None else \
            f"{registry.dvc_file(paths)} may name it (its listing is not in DVC's cache)"
    if not model_folder.exists(paths.candidate) or model_folder.version_of(paths.candidate) != version:
        return f"it is the only copy of that model ({paths.candidate} holds another)"
    return None


def recover(paths: Paths) -> list[str]:
    """Finish or undo what a killed promotion or rollback left; return what was repaired (nothing, usually).

    The history decides: production is made a copy of the version it names, and the copy of the candidate that a
    promotion killed before its commit made is removed, and so are half-copied folders. A registry version that
    the history does not name is never removed while anything else may still need it (the production folder,
    registry.dvc, a missing or damaged history, no other copy of it). Call it while holding the run lock.
    """
    history = registry.read(paths)
    repairs = [f"removed {folder.name}" for folder in leftovers.remove([paths.production])]
    if paths.registry.is_dir():
        promoted = {event["version"] for event in history.events if event["action"] == "promote"}
        repairs += [f"removed {folder.name}" for folder in leftovers.remove_within(paths.registry)]
        for folder in [item for item in paths.registry.iterdir() if item.is_dir() and not item.name.startswith(".")]:
            if folder.name in promoted:
                continue
            kept = _kept_reason(paths, history, folder.name)
            if kept is None:
                shutil.rmtree(folder)
                repairs.append(f"removed registry version {folder.name}, the copy of the candidate that a "
                               "promotion stopped before its commit made")
            else:
                logger.warning("%s: no promotion in %s records it; kept, because %s", folder, history.path.name,
                               kept)
    stack = active_versions(history.events)
    current = stack[-1] if stack else None
    if current is not None and history.damaged:
        logger.warning("production left as it is: %s has lines that cannot be read, so which version it names is "
                       "not certain", history.path)
    elif current is not None and installed_version(paths) != current:
        _install(paths, current)
        repairs.append(f"installed version {current} in production, as the history says")
    if current is not None and paths.gate.is_file() and not history.damaged:
        gate = json.loads(paths.gate.read_text(encoding="utf-8"))
        judged_against_itself = (gate.get("champion") or {}).get("version") == current  # nothing was promoted
        if not gate.get("promoted") and gate.get("candidate", {}).get("version") == current and \
                not judged_against_itself and \
                history.events[-1]["action"] == "promote" and history.events[-1]["version"] == current:
            atomic.write_json(paths.gate, gate | {"promoted": True})
            repairs.append(f"recorded the promotion of {current} in {paths.gate.name}")
    for repair in repairs:
        logger.warning("finishing an interrupted promotion or rollback: %s", repair)
    return repairs


def candidate_is_production(paths: Paths) -> bool:
    """Whether the candidate is the model production holds (the same version id): nothing to promote."""
    return model_folder.exists(paths.candidate) and model_folder.version_of(paths.candidate) == current_version(paths)


def standing_sentence(paths: Paths, gate: dict[str, Any]) -> str:
    """What a run that changed nothing says of the candidate: that it is production already, or the gate's last word
    (a refused or not yet promoted candidate)."""
    if candidate_is_production(paths):
        return (f"Nothing changed since the last run: the candidate is the production model "
                f"({model_folder.version_of(paths.candidate)}).")
    return f"Nothing changed since the last run. {gate.get('sentence', '')}".strip()


def _forcing_hint(gate: dict[str, Any]) -> str:
    """Suggest a forced promotion only for a candidate that reaches what every model must (the floors, exports)."""
    failed = gate_record.failed_own_checks(gate.get("checks", []))
    if not failed:
        return " To promote it anyway, force the promotion with a reason."
    return (f" It fails {', '.join(check['name'] for check in failed)}, which every model must pass: retrain it "
            "rather than force it.")


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
    gate_is_current = gate is not None and gate_record.is_current(paths)
    if not force:
        if not gate_is_current:
            raise PromotionRefused(f"{paths.gate}: no gate decision for this candidate; run the gate first "
                                   "(or force the promotion with a reason)")
        if gate["decision"] != "pass":
            raise PromotionRefused(f"the gate refused this candidate: {gate['sentence']}{_forcing_hint(gate)}")
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
    history = registry.read(paths)
    if history.damaged:
        raise ValueError(f"{history.path}: cannot tell which model came before with lines that cannot be read "
                         f"({'; '.join(history.damaged)}); fix or remove them (or restore the file: `git checkout`, "
                         "`dvc checkout data/models/registry.dvc`), then roll back again")
    stack = active_versions(history.events)
    if not history.exists and paths.registry.is_dir() and any(
            model_folder.exists(item) for item in paths.registry.iterdir()):
        raise ValueError(f"{history.path}: missing, though {paths.registry} holds model versions, so which one came "
                         "before is not known; restore it (`git checkout`, `dvc checkout data/models/registry.dvc`)"
                         ", then roll back again")
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
