"""`imgpipe gc`: the raw store compacted (tasks/ingest/gc.py) and recorded in dvc.lock under the run lock, then
DVC's cache pruned. Reads params.yaml and the raw store; writes the raw store, dvc.lock and DVC's cache."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flows import run_lock, stage_runner
from tasks.config import load_config


def collect(repo: str | Path, keep_cache: bool, lock_timeout: float) -> dict[str, Any]:
    """Compact the raw store, commit the ingest stage's new outputs, and (unless `keep_cache`) run `dvc gc`."""
    from tasks.ingest import gc

    config, paths = load_config(Path(repo) / "params.yaml")
    with run_lock.workspace_lock(paths.root, lock_timeout):
        summary = gc.run(config.ingest, paths)
        log = logging.getLogger("dvc").info
        stage_runner.commit(paths.root, "ingest", log)
        if not keep_cache:
            stage_runner.collect_garbage(paths.root, log)
    return summary
