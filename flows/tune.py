"""The tuning flow: a hyper-parameter sweep as DVC experiments (plan, prepare, queue, follow, report, apply).

`imgpipe tune` runs the same steps without Prefect (`run_sweep(PLAIN_STEPS)`): a sweep outlives the command that
follows it (DVC's queue workers run the trials), so the command starts no Prefect server that a `kill -9` would
leave behind. The flow `tune` runs them as Prefect tasks, to schedule a sweep like the training flow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows import run_lock, stage_runner
from flows.training import run_stage
from tasks.config import ArgumentError
from tasks.tune import sweep

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Steps:
    """The steps of a sweep: plain functions, or the same wrapped as Prefect tasks."""

    plan: Callable[[Path, bool], list[str]]  # returns the stages to bring up to date before queueing
    stage: Callable[[Path, str], Any]
    queue: Callable[[Path], int]
    follow: Callable[[Path, int], Any]
    report: Callable[[Path], dict[str, Any]]
    apply: Callable[[Path], dict[str, Any]]


def run_sweep(root: Path, jobs: int | None, apply: bool, restart: bool, lock_timeout: float,
              steps: Steps) -> dict[str, Any]:
    """Plan (or resume), bring the stages before `train` up to date, queue, follow, report, and apply if asked.

    Planning, queueing and applying hold the repository's run lock; following does not, since the trials run
    in DVC's own folders.
    """
    if jobs is not None and jobs < 1:
        raise ArgumentError(f"`jobs` must be >= 1, got {jobs}")
    with run_lock.workspace_lock(root, lock_timeout):
        for name in steps.plan(root, restart):
            steps.stage(root, name)
        steps.queue(root)
    steps.follow(root, sweep.default_jobs() if jobs is None else jobs)
    summary = steps.report(root)
    if apply:
        with run_lock.workspace_lock(root, lock_timeout):
            summary["applied"] = steps.apply(root)
    return summary


def _plan(root: Path, restart: bool) -> list[str]:
    return sweep.plan(root, restart).upstream


def bring_up_to_date(root: Path, name: str) -> stage_runner.StageResult:
    """`dvc repro` one stage in the workspace, without Prefect (its output at debug level, a summary at info)."""
    logger.info("stage %s: bringing it up to date (dvc repro)", name)
    result = stage_runner.repro_stage(root, name, logger.debug)
    logger.info("stage %s %s in %.1f s", name, result.status, result.seconds)
    return result


PLAIN_STEPS = Steps(_plan, bring_up_to_date, sweep.queue_trials, sweep.follow, sweep.report, sweep.apply_best)


def find_learning_rate(root: Path, lock_timeout: float, min_rate: float, max_rate: float, steps: int) -> Any:
    """`imgpipe lr-find`, without Prefect: under the run lock, the stages before `train` brought up to date, then the
    learning-rate range test on the training split (tasks/tune/lr_find.py); its result."""
    from tasks.config import load_config
    from tasks.tune import experiments, lr_find

    with run_lock.workspace_lock(root, lock_timeout):
        for name in experiments.read_pipeline(root).upstream:  # the training split, up to date
            bring_up_to_date(root, name)
        config, paths = load_config(root / "params.yaml")
        return lr_find.run(config.train, config.preprocess.augment, config.base.seed, paths,
                           min_rate=min_rate, max_rate=max_rate, steps=steps)


@task(name="report")
def report_sweep(root: Path) -> dict[str, Any]:
    summary = sweep.report(root)
    best = summary["best"]
    create_markdown_artifact(
        key="tuning-summary", description=f"Sweep {summary['sweep']}; table: {summary['table']}",
        markdown=f"Sweep `{summary['sweep']}`, objective `{summary['objective']}` (validation split)\n\n```\n"
                 f"{summary['text']}\n```\n\nBest: " + (f"`{best['trial']}` {best['params']}" if best else "none"))
    create_table_artifact(key="tuning-counts", table=[{"status": status, "trials": number}
                                                       for status, number in summary["counts"].items()])
    return summary


TASK_STEPS = Steps(
    plan=task(name="plan")(_plan),
    stage=lambda root, name: run_stage.with_options(name=name)(root, name),
    queue=task(name="queue")(sweep.queue_trials),
    follow=task(name="follow")(sweep.follow),
    report=report_sweep,
    apply=task(name="apply")(sweep.apply_best),
)


@flow(name="tune", log_prints=True)
def tune(repo: str = ".", jobs: int | None = None, apply: bool = False, restart: bool = False,
         lock_timeout: float = 0.0) -> dict[str, Any]:
    """Run the sweep of params.yaml's `tune` section, one DVC experiment per trial, and report the best trial.

    The stages before `train` are brought up to date in the workspace first, so trials reuse their outputs from
    DVC's cache. A sweep interrupted at any point resumes when the flow runs again.
    """
    return run_sweep(Path(repo).resolve(), jobs, apply, restart, lock_timeout, TASK_STEPS)
