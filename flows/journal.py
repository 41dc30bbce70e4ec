"""What a run still owes after its stages: reads and writes .dvc/tmp/imgpipe-journal.json.

The steps, in the order they are done: `promote` (gate the candidate, promote it when it passes), `track`
(`dvc add` of the production model and the registry), `push` (to the DVC remote), `commit` (dvc.lock and the
.dvc files to git, when asked). Each is written here, in one atomic rename, before any of its work starts, and
struck off once it is done; a run killed in between (even with kill -9) leaves it here, and the next
`imgpipe run` does it, although no stage changed.
"""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path

from tasks import atomic

STEPS = ("promote", "track", "push", "commit")

logger = logging.getLogger(__name__)


def journal_file(root: Path) -> Path:
    return root / ".dvc" / "tmp" / "imgpipe-journal.json"


def owed(root: Path) -> list[str]:
    """The steps a run started and did not finish, in the order they are done."""
    path = journal_file(root)
    if not path.is_file():
        return []
    try:
        steps = json.loads(path.read_text(encoding="utf-8"))["owed"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("%s: unreadable (%s); doing every release step again to be safe", path, error)
        return list(STEPS)
    return [step for step in STEPS if step in steps]


def _write(root: Path, steps: list[str]) -> None:
    if steps:
        atomic.write_json(journal_file(root), {
            "owed": steps, "updated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    else:
        journal_file(root).unlink(missing_ok=True)


def owe(root: Path, steps: list[str]) -> list[str]:
    """Record `steps` as owed (with those already owed), before doing them; return everything owed."""
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise ValueError(f"unknown release steps {sorted(unknown)}; known: {', '.join(STEPS)}")
    everything = [step for step in STEPS if step in steps or step in owed(root)]
    _write(root, everything)
    return everything


def done(root: Path, step: str) -> None:
    """Strike `step` off once its work is finished."""
    _write(root, [item for item in owed(root) if item != step])
