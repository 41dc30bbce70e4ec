"""The owner's params changes (`-S key=value`): checked before any flow starts, then written into params.yaml under
the run lock. Reads and writes params.yaml."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flows import run_lock
from tasks import params_file
from tasks.config import load_config

logger = logging.getLogger(__name__)


def check(repo: str | Path, assignments: list[str] | None = None) -> dict[str, Any]:
    """params.yaml, with the `key=value` changes, checked before any flow starts: a bad key is one line."""
    params = Path(repo).resolve() / "params.yaml"
    load_config(params)
    overrides = params_file.parse_assignments(assignments or [])
    if overrides:
        params_file.check(params, overrides)
    return overrides


def write(repo: str | Path, overrides: dict[str, Any], lock_timeout: float) -> list[str]:
    """Write the owner's changes into params.yaml (checked again, under the run lock); what changed.

    Only the command changes params: the training flow takes none, so that a run created over Prefect's API runs
    the committed params.yaml.
    """
    root = Path(repo).resolve()
    with run_lock.workspace_lock(root, lock_timeout):
        changes = params_file.write(root / "params.yaml", overrides)
    for key, old_value, new_value in changes:
        logger.info("params.yaml: %s %r -> %r (kept in params.yaml)", key, old_value, new_value)
    return [f"{key}: {old_value!r} -> {new_value!r}" for key, old_value, new_value in changes]
