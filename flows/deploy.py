"""Schedules: serves the training flow on a cron or an interval with Prefect's serve (one run at a time)."""

from __future__ import annotations

import datetime
from pathlib import Path

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from flows.training import training

DEPLOYMENT_NAME = "scheduled-retrain"


def retrain_deployment(repo: Path, cron: str | None = None, interval_seconds: float | None = None,
                       name: str = DEPLOYMENT_NAME):
    """The training flow as a deployment for this repository; an overlapping run is cancelled, not queued."""
    if (cron is None) == (interval_seconds is None):
        raise ValueError("give exactly one of --cron (e.g. '0 3 * * *') or --interval SECONDS")
    if interval_seconds is not None and interval_seconds <= 0:
        raise ValueError(f"--interval must be > 0 seconds, got {interval_seconds}")
    interval = datetime.timedelta(seconds=interval_seconds) if interval_seconds is not None else None
    return training.to_deployment(
        name=name,
        cron=cron,
        interval=interval,
        parameters={"repo": str(repo.resolve()), "push": True, "lock_timeout": 0},
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        description="Retrain when data, code or params changed; gate, promote or refuse, report, push.",
        tags=["imgpipe"],
    )


def serve_retraining(repo: Path, cron: str | None = None, interval_seconds: float | None = None) -> None:
    """Serve the scheduled retrain until interrupted (Ctrl-C); runs happen in this process."""
    serve(retrain_deployment(repo, cron, interval_seconds))
