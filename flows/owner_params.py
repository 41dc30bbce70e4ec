"""The owner's params changes (`-S key=value`): checked before any flow starts, then written into params.yaml under
the run lock. Reads and writes params.yaml."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flows import run_lock
from tasks import params_file
from tasks.config import apply_overrides, check_values, load_config, read_params

logger = logging.getLogger(__name__)


def check(repo: str | Path, assignments: list[str] | None = None) -> dict[str, Any]:
    """params.yaml, with the `key=value` changes, checked before any flow starts: a bad key is one line."""
    params = Path(repo).resolve() / "params.yaml"
    load_config(params)
    overrides = params_file.parse_assignments(assignments or [])
    if overrides:
        params_file.check(params, overrides)
    return overrides


def check_sweep(repo: str | Path, assignments: list[str] | None, trials: int | None = None,
                epochs: int | None = None) -> dict[str, Any]:
    """`imgpipe tune`'s changes, checked as `check` does: the `key=value` ones, then `trials` (tune.trials, and
    tune.max_trials when it is lower, so that the sweep is not cut short of the number asked) and `epochs`
    (train.epochs, the epochs of each trial)."""
    overrides = check(repo, assignments)
    if epochs is not None:
        overrides["train.epochs"] = epochs
    if trials is not None:
        params = Path(repo).resolve() / "params.yaml"
        config, _ = check_values(apply_overrides(read_params(params), overrides), params)
        if config.tune.method == "grid":
            raise ValueError(f"`trials` {trials}: {params}'s tune.method is grid, which runs every combination of "
                             "tune.space (tune.max_trials caps them: -S tune.max_trials=N); `trials` counts the "
                             "trials that tune.method random draws")
        overrides["tune.trials"] = trials
        if trials > config.tune.max_trials:
            overrides["tune.max_trials"] = trials
    if overrides:
        params_file.check(Path(repo).resolve() / "params.yaml", overrides)
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
