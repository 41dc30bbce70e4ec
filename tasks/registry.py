"""The model registry's record: reads data/models/registry/history.jsonl (which version is in production), the
production folder's version.json (through tasks/model_folder.py) and data/models/registry.dvc with DVC's listing
of it; writes nothing.

history.jsonl is the committed pointer: its latest live promotion is the production model, whatever a production
folder left half-way by a killed promotion or rollback holds. A line that is not a valid record is skipped with a
warning naming the file and line (never its content), and reported to the callers that must not act on a history
with a hole in it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tasks import dvc_outputs, model_folder
from tasks.paths import Paths

logger = logging.getLogger(__name__)

HISTORY_FILE = "history.jsonl"
ACTIONS = ("promote", "rollback")
_warned: set[tuple[str, int, str]] = set()


@dataclass(frozen=True)
class History:
    """The events of history.jsonl that could be read, and where the others are."""

    path: Path
    exists: bool
    events: list[dict[str, Any]] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # "history.jsonl line 3: not JSON", one per skipped line


def history_file(paths: Paths) -> Path:
    return paths.registry / HISTORY_FILE


def _problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    if record.get("action") not in ACTIONS:
        return f"its action is not one of {', '.join(ACTIONS)}"
    if not isinstance(record.get("version"), str) or not record["version"]:
        return "it has no version"
    return None


def read(paths: Paths) -> History:
    path = history_file(paths)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return History(path, exists=False)
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: unreadable ({type(error).__name__}); restore it (`git checkout`, or "
                         "`dvc checkout data/models/registry.dvc`)") from None
    events, damaged = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            problem = _problem(record)
        except json.JSONDecodeError as error:
            record, problem = None, f"not JSON ({error.msg} at column {error.colno})"
        if problem is None:
            events.append(record)
            continue
        damaged.append(f"{path} line {number}: {problem}")
        if (str(path), number, problem) not in _warned:
            _warned.add((str(path), number, problem))
            logger.warning("%s line %d: not a valid registry record (%s); skipped. Fix or remove that line (each "
                           "line is one JSON object with an action and a version, as promote and rollback write "
                           "them), or restore the file (`git checkout`, `dvc checkout data/models/registry.dvc`)",
                           path, number, problem)
    return History(path, True, events, damaged)


def read_history(paths: Paths) -> list[dict[str, Any]]:
    return read(paths).events


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
    version = model_folder.read_installed_version(paths.production)
    return version if version is not None and model_folder.exists(paths.production) else None


def production_model(paths: Paths) -> Path | None:
    """The folder that holds the committed production model: the production folder, or, when a promotion or
    rollback was killed after its commit and before the production folder followed, the registry's copy of the
    version history.jsonl names. None when there is no production model."""
    history = read(paths)
    stack = active_versions(history.events)
    if not stack or history.damaged:  # no pointer, or one with a hole in it: the production folder as it is
        return paths.production if model_folder.exists(paths.production) else None
    if installed_version(paths) == stack[-1]:
        return paths.production
    committed = paths.registry / stack[-1]
    if not model_folder.exists(committed):
        raise ValueError(f"{history.path} names {stack[-1]} as the production model, but {paths.production} holds "
                         f"{installed_version(paths) or 'no registry version'} and {committed} is missing; restore "
                         "the registry (`dvc checkout data/models/registry.dvc`, or `dvc pull`)")
    logger.warning("%s holds %s, but %s names %s as the production model (a promotion or rollback was stopped "
                   "before it finished; the next imgpipe run, promote or rollback finishes it): using %s",
                   paths.production, installed_version(paths) or "no registry version", history.path.name,
                   stack[-1], committed)
    return committed


def dvc_file(paths: Paths) -> Path:
    return paths.registry.with_name(f"{paths.registry.name}.dvc")


def versions_in_dvc(paths: Paths) -> set[str] | None:
    """The registry versions that the committed registry.dvc names (from DVC's listing of the folder in its
    cache): an empty set without registry.dvc, None when it exists but its listing cannot be read."""
    path = dvc_file(paths)
    if not path.is_file():
        return set()
    try:
        outputs = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("outs") or []
        md5 = str(outputs[0]["md5"])
        listing = dvc_outputs.cache_folder(paths.root) / "files" / "md5" / md5[:2] / md5[2:]
        entries = json.loads(listing.read_text(encoding="utf-8"))
        return {str(entry["relpath"]).split("/")[0] for entry in entries}
    except (OSError, ValueError, yaml.YAMLError, KeyError, IndexError, TypeError, AttributeError):
        return None
