"""Links a stage's outputs of its last run back from DVC's cache: reads dvc.lock and the cache, writes the outputs.

DVC deletes a stage's outputs before running it. An output declared `persist` is kept instead, but DVC then
replaces every hard-linked file of it with a copy ("unprotect"): a full copy of the raw store on every run, and a
full rehash after it. Ingest and preprocess, which add to what they wrote before, declare plain outputs and call
`restore` first: each missing output is linked back from the cache as dvc.lock last recorded it, the very files
(same inodes) DVC committed, so nothing is copied and DVC sees unchanged files without hashing them again.
Outside DVC (tests, `python -m` by hand) the outputs are where they were and nothing happens.
Since a restored file and its cache object are one file, a file found damaged is removed from the cache too
(`discard`), so that no later restore or checkout links the damaged bytes back.
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


def _listing(cache: Path, md5: str) -> list[tuple[str, str]] | None:
    """(relative path, md5) of every file of a folder output (md5 ending .dir); None when the cache lacks it."""
    try:
        listing = json.loads(_object(cache, md5).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return [(entry["relpath"], entry["md5"]) for entry in listing]


def restore(root: Path, stage: str, targets: list[Path], partial: bool = False) -> list[Path]:
    """Link back every target (file or folder) that is missing, as dvc.lock last recorded it; return those restored.

    A target whose objects are not all in the cache (pruned, or never pulled) is left missing: the stage then
    rebuilds it from its inputs, as on a first run. With `partial`, a folder is linked back with the files the cache
    still has (for a stage that checks its folder against its own index and rebuilds what is missing, as ingest does
    with the raw store's shards).
    """
    outputs = _locked_outputs(root, stage)
    cache = cache_folder(root)
    restored = []
    for target in targets:
        md5 = outputs.get(os.path.relpath(target, root).replace(os.sep, "/"))
        if target.exists() or md5 is None:
            continue
        entries: list[tuple[str, str]] | None = [("", md5)]
        if md5.endswith(".dir"):
            entries = _listing(cache, md5)
            if entries is None:
                logger.info("%s: the listing of its last version is not in DVC's cache; built afresh", target)
                continue
        missing = [relative for relative, object_md5 in entries if not _object(cache, object_md5).is_file()]
        if missing and not (partial and md5.endswith(".dir")):
            logger.info("%s: %d file(s) of its last version are not in DVC's cache (e.g. %s); built afresh", target,
                        len(missing), missing[0] or target.name)
            continue
        if missing:
            logger.warning("%s: %d file(s) of its last version are not in DVC's cache (e.g. %s); linked back without "
                           "them", target, len(missing), missing[0])
            absent = set(missing)
            entries = [(relative, object_md5) for relative, object_md5 in entries if relative not in absent]
        building = target.with_name(f".{target.name}.restoring")
        shutil.rmtree(building, ignore_errors=True)
        building.unlink(missing_ok=True)
        for relative, object_md5 in entries:
            _link(_object(cache, object_md5), building / relative if relative else building)
        if not entries:  # an empty folder
            building.mkdir(parents=True, exist_ok=True)
        os.replace(building, target)
        restored.append(target)
    if restored:
        logger.info("%s: linked %d output(s) of the last run back from DVC's cache: %s", stage, len(restored),
                    ", ".join(str(path.relative_to(root)) for path in restored))
    return restored


def discard(root: Path, stage: str, folder: Path, names: list[str]) -> list[str]:
    """Remove from DVC's cache the objects that are these (damaged) files of a folder output of `stage`: only an object
    that is the very same file (a hard link), so its bytes are damaged too; return the names whose object was removed.
    A good copy may still be on the DVC remote, for `dvc pull` of a version that names it."""
    md5 = _locked_outputs(root, stage).get(os.path.relpath(folder, root).replace(os.sep, "/"))
    cache = cache_folder(root)
    entries = dict(_listing(cache, md5) or []) if md5 is not None and md5.endswith(".dir") else {}
    removed = []
    for name in names:
        cached = _object(cache, entries[name]) if name in entries else None
        try:
            if cached is None or not os.path.samefile(cached, folder / name):
                continue
            cached.unlink()
        except OSError:  # not there, or not ours to remove: nothing is linked back from it as long as dvc.lock moves on
            continue
        removed.append(name)
    if removed:
        logger.warning("%s: removed %d damaged file(s) from DVC's cache as well (%s): they were the same files",
                       folder, len(removed), ", ".join(removed))
    return removed
