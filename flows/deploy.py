"""Schedules: serves the training flow on a cron or an interval with a Prefect runner (one run at a time).

Stopping (Ctrl-C or SIGTERM) cancels the run in flight, kills its stages and marks it Cancelled; no run of the
deployment is left shown as Running.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import signal
import threading
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.runner import Runner
from prefect.states import Cancelled

from flows import console_log, prefect_home
from flows.training import training

DEPLOYMENT_NAME = "scheduled-retrain"
POLL_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 60  # the run in flight gets this long to be cancelled before serve gives up waiting
_UNFINISHED = [StateType.RUNNING, StateType.PENDING, StateType.CANCELLING]

logger = logging.getLogger(__name__)


def retrain_deployment(repo: Path, cron: str | None = None, interval_seconds: float | None = None,
                       name: str = DEPLOYMENT_NAME, commit: bool | None = None):
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
        parameters={"repo": str(repo.resolve()), "push": True, "lock_timeout": 0, "commit": commit},
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        description="Retrain when data, code or params changed; gate, promote or refuse, report, push.",
        tags=["imgpipe"],
    )


async def _cancel_unfinished(deployment_id, reason: str) -> list[str]:
    """Mark the deployment's runs that are still shown as pending or running Cancelled; their names."""
    async with get_client() as client:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_UNFINISHED))),
            sort=FlowRunSort.START_TIME_DESC, limit=100)
        for run in runs:  # forced: a run whose process is gone cannot take part in the usual transitions
            await client.set_flow_run_state(run.id, Cancelled(message=reason), force=True)
    return [run.name for run in runs]


def _wait_for_ctrl_c(loop: asyncio.AbstractEventLoop, stop_requested: asyncio.Event) -> None:
    """Tell the serving loop when SIGINT (Ctrl-C) comes; it is blocked in every thread, so it is taken here."""
    signal.sigwait({signal.SIGINT})
    loop.call_soon_threadsafe(stop_requested.set)


async def _serve(deployment, schedule: str, poll_seconds: float | None) -> None:
    runner = Runner(pause_on_shutdown=True, query_seconds=poll_seconds)
    deployment_id = await runner.aadd_deployment(deployment)
    # a serve killed without a chance to clean up (kill -9, a power cut) left its run shown as Running; it would
    # hold the deployment's one concurrency slot for good, and every scheduled run would be cancelled
    stale = await _cancel_unfinished(deployment_id, "its imgpipe serve stopped without finishing it")
    if stale:
        logger.warning("marked as cancelled, left unfinished by an earlier serve: %s", ", ".join(stale))
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    serving = asyncio.create_task(runner.start())
    # runner.start() installs Prefect's own SIGTERM handler first thing, which cannot stop a running loop cleanly
    # (it leaves the run in flight shown as Running, and warns of a coroutine never awaited): ours replace it
    await asyncio.sleep(0)
    loop.add_signal_handler(signal.SIGTERM, stop_requested.set)
    # SIGINT is blocked in every thread this process started, and taken by the thread below; a thread some library
    # started before the block could still receive it, and asyncio's own handler would then cancel this coroutine
    # with a traceback: the same quiet stop, whichever thread it reaches
    loop.add_signal_handler(signal.SIGINT, stop_requested.set)
    threading.Thread(target=_wait_for_ctrl_c, args=(loop, stop_requested), daemon=True).start()
    logger.info("serving the training flow of %s %s; Ctrl-C stops it", deployment.parameters["repo"], schedule)
    waiting = asyncio.create_task(stop_requested.wait())
    await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if serving.done():
        waiting.cancel()
        serving.result()  # the runner stopped by itself: say why
        return
    logger.info("stopping: cancelling the run in flight, if any")
    await runner.astop()  # kills the run in flight and proposes Cancelled for it
    try:
        await asyncio.wait_for(serving, STOP_TIMEOUT_SECONDS)
    except (TimeoutError, asyncio.CancelledError):
        pass
    cancelled = await _cancel_unfinished(deployment_id, "imgpipe serve stopped while this run was in flight")
    if cancelled:
        logger.info("marked as cancelled: %s", ", ".join(cancelled))


def _log_runs_as_imgpipe_run(repo: Path) -> None:
    """Give the runs' processes (started by the runner, which imports nothing of ours to configure them) the log lines
    of `imgpipe run`, through Prefect's logging configuration file; one the user chose is left in charge."""
    from prefect.settings import PREFECT_LOGGING_SETTINGS_PATH

    if "PREFECT_LOGGING_SETTINGS_PATH" in os.environ or PREFECT_LOGGING_SETTINGS_PATH.value().exists():
        return
    os.environ["PREFECT_LOGGING_SETTINGS_PATH"] = str(console_log.served_runs_logging(prefect_home.make_home(repo)))


def serve_retraining(repo: Path, cron: str | None = None, interval_seconds: float | None = None,
                     commit: bool | None = None) -> None:
    """Serve the scheduled retrain until interrupted (Ctrl-C or SIGTERM); runs happen in child processes.

    commit None: each run commits dvc.lock and the .dvc files when the git index holds nothing staged.
    """
    deployment = retrain_deployment(repo, cron, interval_seconds, commit=commit)
    _log_runs_as_imgpipe_run(repo)
    schedule = f"on the cron schedule {cron!r}" if cron else f"every {interval_seconds:g} s"
    # Prefect looks for due runs every 10 s (PREFECT_RUNNER_POLL_FREQUENCY): often enough, unless runs come faster
    poll_seconds = None
    if interval_seconds is not None and "PREFECT_RUNNER_POLL_FREQUENCY" not in os.environ:
        poll_seconds = min(POLL_SECONDS, max(interval_seconds / 2, 1.0))
    # Ctrl-C goes to every process of the terminal's foreground group, the runs' processes too, which would die on
    # their own (with a traceback, if still starting) instead of being cancelled: SIGINT is blocked before any of
    # them starts, so that they inherit it blocked, and this process takes it in a thread of its own. (The command
    # line blocks it earlier still, before imports start threads that would otherwise take it.)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        asyncio.run(_serve(deployment, schedule, poll_seconds))
    except KeyboardInterrupt:  # Ctrl-C while still starting, before a run could begin
        logger.info("stopped before serving")
