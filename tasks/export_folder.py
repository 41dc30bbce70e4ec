"""The export folder format: reads the export stage's output (data/models/candidate_exports/: the exports, the int8
ONNX model, engines.json, and checksums.json with the sha256 of each and the version id of the model they were made
from) and joins it with its model folder into one complete model folder; writes only that joined folder.

The exports cannot live in the candidate folder (train's DVC output; outputs may not overlap), so what runs them
whole (the export stage's engine check, the gate's export parity) and promotion (registry/<version>, which predict
runs unchanged) see the two joined: model.keras and the exports side by side with one checksums.json over all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks import atomic, model_checksums, model_folder

EXPORT_STAGE = "run the export stage (`dvc repro export`, or `imgpipe run`)"


class NotMade(ValueError):
    """The export folder is missing, or was made from another model than the one it is joined with."""


def made_from(folder: Path) -> str | None:
    """The version id of the model the exports in `folder` were made from; None when it records none."""
    record = model_checksums.read_checksums(folder)
    version = (record or {}).get("version")
    return version if isinstance(version, str) and version else None


def check_made_from(exports: Path, model: Path) -> str:
    """The version id of the model in `model`, once `exports` is known to be made from it (else NotMade)."""
    version = model_folder.version_of(model)
    made = made_from(exports)
    if made is None:
        raise NotMade(f"{exports}: no exports of the model in {model} (no {model_checksums.CHECKSUMS_FILE} "
                      f"recording which model they were made from); {EXPORT_STAGE}")
    if made != version:
        raise NotMade(f"{exports}: made from the model {made}, but {model} holds the model {version}; "
                      f"{EXPORT_STAGE} to export this one")
    return version


def write_engines(folder: Path, version: str, record: dict[str, Any]) -> None:
    """Write engines.json, the last file the export stage writes, and seal the folder as made from `version`."""
    atomic.write_json(folder / model_folder.ENGINES_FILE, record)
    model_checksums.seal(folder, version)


def _entries(folder: Path) -> list[str]:
    """The files and folders directly in `folder` that checksums.json records, a folder as `name/` (which stands for
    every file in it when checked)."""
    return sorted({name.split("/")[0] + "/" if "/" in name else name for name in model_checksums.files(folder)})


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another disk, or links not allowed there
        shutil.copy2(source, target)


def join(model: Path, exports: Path, target: Path, link: bool = False) -> str:
    """Fill `target` (a new, empty folder) with the model folder `model` and its exports from `exports`, each file
    checked against the checksums.json of its folder first, and seal it with one checksums.json over all of them.
    With `link`, files are hard links where the disk allows (for a folder only read, then removed). Returns the
    version id; NotMade when `exports` was not made from this model, a ValueError naming a damaged file."""
    version = check_made_from(exports, model)
    exported = _entries(exports)
    model_checksums.check_files(exports, exported, version)  # each as the export stage wrote it
    skipped = {model_checksums.CHECKSUMS_FILE, model_folder.VERSION_FILE, *(name.rstrip("/") for name in exported)}
    own = [name for name in _entries(model) if name.rstrip("/") not in skipped]
    if model_checksums.exists(model):
        model_checksums.check_files(model, own, version)  # as train wrote them
    copy = {"copy_function": _link_or_copy} if link else {}
    for source, left_out in ((model, skipped), (exports, {model_checksums.CHECKSUMS_FILE})):
        top = os.fspath(source)

        def ignored(folder: str, names: list[str], top: str = top, left_out: set[str] = left_out) -> list[str]:
            return [name for name in names if name.startswith(".") or (folder == top and name in left_out)]

        shutil.copytree(source, target, dirs_exist_ok=True, ignore=ignored, **copy)
    model_checksums.seal(target, version)
    return version


@contextmanager
def joined(model: Path, exports: Path) -> Iterator[Path]:
    """A temporary complete model folder of `model` and `exports` (hard links), beside `exports` and removed
    afterwards; one a killed run leaves is removed like an atomic_directory leftover (tasks/leftovers.py)."""
    exports.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{exports.name}.joined-", suffix=".partial", dir=exports.parent))
    try:
        join(model, exports, folder, link=True)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
