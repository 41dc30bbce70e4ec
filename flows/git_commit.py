"""Commits what DVC records of a run (dvc.lock, the .dvc files, DVC's .gitignore files) and the params.yaml the run
used to git; reads git's status.

Only those files go into the commit (`git commit --only`): whatever else the user has staged stays staged and
uncommitted. The lock and params.yaml go together, so that `dvc params diff`, `dvc metrics diff`, `dvc plots diff`
and `dvc exp show` compare real revisions, each commit holding the params its lock records.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

LOCK_FILE = "dvc.lock"
PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class CommitResult:
    committed: bool
    revision: str  # the new commit's short hash ("" when none was made)
    message: str  # the commit message, or why no commit was made
    files: tuple[str, ...] = ()


def _git(root: Path, *arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *arguments], cwd=root, capture_output=True, text=True, check=check)


def is_repository(root: Path) -> bool:
    """Whether `root` is the top folder of a git work tree (not merely inside one)."""
    try:
        found = _git(root, "rev-parse", "--show-toplevel", check=False)
    except OSError:  # no git installed
        return False
    return found.returncode == 0 and Path(found.stdout.strip()).resolve() == root.resolve()


def index_is_clean(root: Path) -> bool:
    """Whether nothing is staged: the index equals HEAD (or, before the first commit, is empty)."""
    if _git(root, "rev-parse", "--verify", "--quiet", "HEAD", check=False).returncode != 0:
        return not _git(root, "ls-files", "--cached").stdout.strip()
    return _git(root, "diff", "--cached", "--quiet", check=False).returncode == 0


def _dvc_files(root: Path) -> list[str]:
    """dvc.lock, every .dvc file, and the .gitignore files DVC keeps beside the outputs they name."""
    candidates = {LOCK_FILE} if (root / LOCK_FILE).is_file() else set()
    outputs: list[str] = []
    if (root / LOCK_FILE).is_file():
        stages = (yaml.safe_load((root / LOCK_FILE).read_text(encoding="utf-8")) or {}).get("stages") or {}
        outputs += [item["path"] for stage in stages.values() for item in stage.get("outs") or []]
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", ":(glob)**/*.dvc")
    for name in filter(None, listed.stdout.split("\0")):
        candidates.add(name)
        record = yaml.safe_load((root / name).read_text(encoding="utf-8")) or {}
        outputs += [str(Path(name).parent / item["path"]) for item in record.get("outs") or []]
    for output in outputs:
        ignore_file = (Path(output).parent / ".gitignore").as_posix()
        if (root / ignore_file).is_file():
            candidates.add(ignore_file)
    return sorted(candidates)


def changed_files(root: Path) -> list[str]:
    """The files DVC writes for git that differ from HEAD (or are new)."""
    files = _dvc_files(root)
    if not files:
        return []
    status = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", *files)
    changed = set()
    for entry in filter(None, status.stdout.split("\0")):
        changed.add(entry[3:])
    return sorted(name for name in files if name in changed)


def commit(root: Path, message: str, params_used: bytes | None = None) -> CommitResult:
    """Commit the DVC files that changed, with params.yaml as the run read it (`params_used`), and nothing else; say
    why not when there is nothing, when params.yaml changed during the run (the lock would contradict it), or when
    git refuses."""
    files = changed_files(root)
    if not files:
        return CommitResult(False, "", "nothing to commit: dvc.lock and the .dvc files are as in HEAD")
    if params_used is not None:
        params = root / PARAMS_FILE
        if not params.is_file() or params.read_bytes() != params_used:
            return CommitResult(False, "", f"not committed: {PARAMS_FILE} changed while the run went on, so dvc.lock "
                                "records other values than it holds; run again, or commit both by hand once they "
                                "agree", tuple(files))
        if _git(root, "status", "--porcelain=v1", "--", PARAMS_FILE).stdout.strip():
            files = sorted([*files, PARAMS_FILE])
    _git(root, "add", "--", *files)
    done = _git(root, "commit", "--quiet", "--only", "-m", message, "--", *files, check=False)
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        return CommitResult(False, "", "git commit failed: " + " ".join(reason[-3:]) +
                            " (the files stay staged; commit them by hand)", tuple(files))
    revision = _git(root, "rev-parse", "--short", "HEAD").stdout.strip()
    return CommitResult(True, revision, message, tuple(files))
