"""Links a stage's outputs of its last run back from DVC's cache: reads dvc.lock and the cache, writes the outputs.

DVC deletes a stage's outputs before running it. An output declared `persist` is kept instead, but DVC then
replaces every hard-linked file of it with a copy ("unprotect"): a full copy of the raw store on every run, and a
full rehash after it. Ingest and preprocess, which add to what they wrote before, declare plain outputs and call
`restore` first: each missing output is linked back from the cache as dvc.lock last recorded it, the very files
(same inodes) DVC committed, so nothing is copied and DVC sees unchanged files without hashing them again.
Outside DVC (tests, `python -m` by hand) the outputs are where they were and nothing happens.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import shutil
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)


def cache_folder(root: Path) -> Path:
    """DVC's cache folder for the repository at root (`cache.dir` of .dvc/config.local or .dvc/config)."""
    for name in ("config.local", "config"):
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(root / ".dvc" / name, encoding="utf-8")
        except configparser.Error:
            continue
        if parser.has_option("cache", "dir"):
            folder = Path(parser.get("cache", "dir").strip().strip("'\""))
            return folder if folder.is_absolute() else (root / ".dvc" / folder).resolve()
    return root / ".dvc" / "cache"


def _object(cache: Path, md5: str) -> Path:
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed: a copy is still right, only larger
        shutil.copy2(source, target)


def _locked_outputs(root: Path, stage: str) -> dict[str, str]:
    """Output path (relative to root) -> md5 as dvc.lock records them for `stage`."""
    lock_file = root / "dvc.lock"
    if not lock_file.is_file():
        return {}
    try:
        stages = (yaml.safe_load(lock_file.read_text(encoding="utf-8")) or {}).get("stages") or {}
    except yaml.YAMLError as error:
        logger.warning("%s: unreadable (%s); outputs of the last run not restored", lock_file, error)
        return {}
    return {item["path"]: item["md5"] for item in (stages.get(stage) or {}).get("outs") or []
            if item.get("hash", "md5") == "md5" and item.get("md5")}


def restore(root: Path, stage: str, targets: list[Path]) -> list[Path]:
    """Link back every target (file or folder) that is missing, as dvc.lock last recorded it; return those restored.

    A target whose objects are not all in the cache (pruned, or never pulled) is left missing: the stage then
    rebuilds it from its inputs, as on a first run.
    """
    outputs = _locked_outputs(root, stage)
    cache = cache_folder(root)
    restored = []
    for target in targets:
        md5 = outputs.get(os.path.relpath(target, root).replace(os.sep, "/"))
        if target.exists() or md5 is None:
            continue
        entries = [("", md5)]
        if md5.endswith(".dir"):
            try:
                listing = json.loads(_object(cache, md5).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                logger.info("%s: the listing of its last version is not in DVC's cache; built afresh", target)
                continue
            entries = [(entry["relpath"], entry["md5"]) for entry in listing]
        missing = [relative for relative, object_md5 in entries if not _object(cache, object_md5).is_file()]
        if missing:
            logger.info("%s: %d file(s) of its last version are not in DVC's cache (e.g. %s); built afresh", target,
                        len(missing), missing[0] or target.name)
            continue
        building = target.with_name(f".{target.name}.restoring")
        shutil.rmtree(building, ignore_errors=True)
        building.unlink(missing_ok=True)
        for relative, object_md5 in entries:
            _link(_object(cache, object_md5), building / relative if relative else building)
        if not entries:  # an empty folder
            building.mkdir(parents=True)
        os.replace(building, target)
        restored.append(target)
    if restored:
        logger.info("%s: linked %d output(s) of the last run back from DVC's cache: %s", stage, len(restored),
                    ", ".join(str(path.relative_to(root)) for path in restored))
    return restored
