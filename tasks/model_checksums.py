"""The checksums of a model folder: writes and reads checksums.json (the sha256 of every file train wrote, with
the version id they go with), and refuses a file that is not what train wrote (an export, engines.json).

The version id covers model.keras, labels.json and thresholds.json (tasks/model_folder.py); this covers the rest
that predict may run, checked when it is opened, so that a swapped or damaged export is never run under the id.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tasks import atomic
from tasks.hashing import file_sha256

# {"version": id, "complete": bool, "sha256": {path in the folder: hash}}; not complete while the export stage is
# still adding exports (tasks/export/build.py), which are then checked only if listed
CHECKSUMS_FILE = "checksums.json"
RESTORE = ("restore the model folder (`dvc checkout`, `dvc pull`, or from data/models/registry/) or retrain it "
           "(`dvc repro train`)")


def _read_record(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: unreadable ({error}); {RESTORE}") from None


def _files(folder: Path) -> list[str]:
    """Every file in `folder` and below (not following links), as paths relative to it, but checksums.json."""
    found = []
    for root, directories, names in os.walk(folder):
        directories[:] = sorted(name for name in directories if not name.startswith("."))
        for name in names:
            relative = (Path(root) / name).relative_to(folder).as_posix()
            if relative != CHECKSUMS_FILE and not name.startswith("."):
                found.append(relative)
    return sorted(found)


def seal(folder: Path, version: str, complete: bool = True) -> None:
    """Record the sha256 of every file in `folder` and the version id they go with (checksums.json)."""
    checksums = {name: file_sha256(folder / name) for name in _files(folder)}
    atomic.write_json(folder / CHECKSUMS_FILE, {"version": version, "complete": complete,
                                                "sha256": checksums})


files = _files  # every file of a folder that checksums.json records


def read_checksums(folder: Path) -> dict[str, Any] | None:
    if not (folder / CHECKSUMS_FILE).is_file():
        return None
    record = _read_record(folder / CHECKSUMS_FILE)
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), dict):
        raise ValueError(f"{folder / CHECKSUMS_FILE}: must be a JSON object with a 'sha256' map; train writes it. "
                         f"{RESTORE[0].upper()}{RESTORE[1:]}")
    return record


def exists(folder: Path) -> bool:
    return (folder / CHECKSUMS_FILE).is_file()


def check_files(folder: Path, names: list[str], version: str | None = None, exports: bool = False) -> None:
    """Refuse (a ValueError naming the file and what to do) files of `folder` that are not what train wrote.

    `names` are paths in the folder; one inside a folder (openvino/model.xml) stands for every file of that folder.
    With `version`, checksums.json must have been written for that model. A file checksums.json does not list is
    refused, but for `exports` while train is still writing them (the record is not complete yet).
    """
    record = read_checksums(folder)
    if record is None:
        raise ValueError(f"{folder}: no {CHECKSUMS_FILE}, so {', '.join(names)} cannot be checked against the model "
                         f"(a folder written before imgpipe recorded checksums, or one that lost them); retrain it "
                         f"(`dvc repro train`), or run model.keras (`engine` keras), which its version id covers")
    if version is not None and record.get("version") != version:
        raise ValueError(f"{folder / CHECKSUMS_FILE}: written for the model {record.get('version')!r}, but "
                         f"model.keras is the model {version}: the folder mixes files of two models; {RESTORE}")
    listed: dict[str, Any] = record["sha256"]
    for name in names:
        inside = name.split("/")[0] if "/" in name else None
        wanted = [name] if inside is None else sorted(
            {f"{inside}/{item}" for item in _files(folder / inside)} |
            {item for item in listed if item.startswith(f"{inside}/")})
        for relative in wanted:
            path = folder / relative
            if relative not in listed:
                if record.get("complete", True) or not exports:
                    raise ValueError(f"{path}: not among the files train wrote ({CHECKSUMS_FILE} does not list "
                                     f"it), so it may not be what the model {record.get('version')} was measured "
                                     f"as; {RESTORE}")
            elif not path.is_file():
                raise ValueError(f"{path}: missing, though {CHECKSUMS_FILE} lists it; {RESTORE}")
            elif file_sha256(path) != listed[relative]:
                raise ValueError(f"{path}: changed or damaged since train wrote it (its sha256 is not the one "
                                 f"{CHECKSUMS_FILE} records), so it is not the model {record.get('version')}; "
                                 f"refusing to run it. {RESTORE[0].upper()}{RESTORE[1:]}")
