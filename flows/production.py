"""Promotion and rollback by hand: the change under the run lock, then production and the registry versioned with
`dvc add` and the run report rewritten. Reads params.yaml; writes what tasks/release/promote.py writes, the .dvc
files and the run report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows import journal, run_lock, stage_runner
from tasks.config import load_config
from tasks.paths import Paths


def change_production(repo: str | Path, lock_timeout: float,
                      change: Callable[[Paths], dict[str, Any]]) -> dict[str, Any]:
    """Run a promotion or rollback under the run lock, then version production and the registry with `dvc add`.

    The `dvc add` is recorded as owed (flows/journal.py) before anything changes, so that a command killed
    half-way is finished by the next run.
    """
    _, paths = load_config(Path(repo) / "params.yaml")
    with run_lock.workspace_lock(paths.root, lock_timeout):
        already_owed = "track" in journal.owed(paths.root)
        journal.owe(paths.root, ["track"])
        try:
            event = change(paths)
        except ValueError:
            if not already_owed:
                journal.done(paths.root, "track")
            raise
        stage_runner.track(paths.root, [paths.production, paths.registry], logging.getLogger("dvc").info)
        journal.done(paths.root, "track")
        from tasks.release import report  # the run report says which model is in production now

        report.run(paths, lineage={"prefect_flow_run_id": f"none: rewritten by imgpipe {event['action']}"})
    return event


def promote(repo: str | Path, reason: str, force: bool, lock_timeout: float) -> dict[str, Any]:
    """Make the candidate the production model (past a refusing gate only when forced); the history's event."""
    from tasks.release import promote as promotion

    return change_production(repo, lock_timeout, lambda paths: promotion.promote(
        paths, reason=reason or "passed the gate", force=force))


def rollback(repo: str | Path, reason: str, lock_timeout: float) -> dict[str, Any]:
    """Restore the previous production model; the history's event."""
    from tasks.release import promote as promotion

    return change_production(repo, lock_timeout, lambda paths: promotion.rollback(paths, reason=reason))
