"""A sweep's steps: plan (or resume) the trials, queue them as DVC experiments, follow them, report, apply the best.

Reads params.yaml (the `tune` section) and DVC's experiments; writes data/reports/tuning/: sweep.json (the plan
and each trial's fate, rewritten atomically after every change), trials.parquet and objective.png. Each step
reads the sweep file afresh, so a sweep killed at any point resumes where it stopped: finished trials stay
listed, trials DVC still runs or holds in its queue are followed, and trials never queued are queued.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from tasks import model_folder
from tasks.config import ArgumentError, apply_overrides, load_config, read_params
from tasks.params import Config
from tasks.paths import Paths
from tasks.pool import available_cores
from tasks.tune import experiments, plots, pruning, results, space, state

logger = logging.getLogger(__name__)

POLL_SECONDS = 5.0
STALLED_POLLS = 3  # polls with trials queued and none running before DVC's workers are started again (dvc#10562)
MISSING_POLLS = 3  # polls a queued trial may be absent from `dvc exp show` before it counts as lost
STUCK_POLLS = 40  # polls with trials queued, none running and a worker alive before a warning
FAILED_POLLS = 5  # `dvc exp show` failures in a row before following gives up


def folder(paths: Paths) -> Path:
    return paths.reports / "tuning"


def sweep_file(paths: Paths) -> Path:
    return folder(paths) / "sweep.json"


def default_jobs() -> int:
    """One trial at a time per two cores: TensorFlow keeps two cores busy with one model."""
    return max(1, available_cores() // 2)


def _settings(root: Path) -> tuple[Config, Paths, dict[str, Any]]:
    config, paths = load_config(root / "params.yaml")
    return config, paths, read_params(root / "params.yaml")


def load(root: Path) -> tuple[Config, Paths, state.Sweep]:
    config, paths, _ = _settings(root)
    sweep = state.load(sweep_file(paths))
    if sweep is None:
        raise ValueError(f"{sweep_file(paths)}: no sweep planned yet; run `imgpipe tune`")
    return config, paths, sweep


def plan(root: Path, restart: bool = False) -> state.Sweep:
    """The sweep that params.yaml's `tune` section asks for: the recorded one when it is the same, else a new plan."""
    config, paths, values = _settings(root)
    dimensions = space.parse_space(config.tune, values)
    trials = space.plan_trials(config.tune, dimensions, values)
    baseline = experiments.git_head(root)
    pipeline = experiments.read_pipeline(root)
    target = experiments.TARGET_STAGE
    touched: set[str] = set()
    for dimension in dimensions:
        reading = experiments.stages_reading(pipeline, dimension.key, [*pipeline.upstream, target])
        if not reading:
            raise ValueError(f"tune.space.{dimension.key}: no stage up to {target} reads {dimension.key} (see the "
                             f"params of dvc.yaml's stages), so every trial would be the same; sweep keys of "
                             f"{target} or of the stages before it")
        touched.update(reading)
    single_item = touched == {target}
    copy_paths = [] if single_item else [path for stage in pipeline.upstream
                                         for path in pipeline.uncached_outputs[stage]]
    tune_values = config.tune.model_dump(mode="json")
    # the swept keys' own values do not count: each trial sets them (and applying the winner writes its values there)
    other_params = apply_overrides({key: value for key, value in values.items() if key != "tune"},
                                   {dimension.key: None for dimension in dimensions})
    identity = state.sweep_id(tune_values, other_params, baseline, uuid.uuid4().hex if restart else "")
    path = sweep_file(paths)
    earlier = state.load(path)
    if earlier is not None and earlier.sweep_id == identity:
        counts = _counts(earlier)
        logger.info("tune: resuming sweep %s (%s)", identity, ", ".join(f"{n} {s}" for s, n in counts.items()))
        return earlier
    if earlier is not None and not earlier.finished:
        unstarted = [trial.name for trial in earlier.trials if trial.status in ("planned", "queued")]
        experiments.remove_queued(root, unstarted)
        logger.warning("tune: sweep %s is replaced (%s); its %d trials not yet started were taken off DVC's "
                       "queue, its finished experiments stay in DVC", earlier.sweep_id,
                       "`restart` asked" if restart else "the tune section or params changed", len(unstarted))
    sweep = state.Sweep(
        sweep_id=identity, baseline=baseline, target=target, upstream=pipeline.upstream, single_item=single_item,
        copy_paths=copy_paths, tune=tune_values,
        trials=[state.Trial(f"tune-{identity[:6]}-{number:02d}", trial)
                for number, trial in enumerate(trials, start=1)],
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    state.save(path, sweep)
    logger.info("tune: planned sweep %s: %d trials (%s) of %s on commit %s; each runs %s", identity,
                len(sweep.trials), config.tune.method, ", ".join(dimension.key for dimension in dimensions),
                baseline[:8], target if single_item else f"{', '.join(sorted(touched))} (and what they depend on)")
    return sweep


def _counts(sweep: state.Sweep) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in sweep.trials:
        counts[trial.status] = counts.get(trial.status, 0) + 1
    return counts


def queue_trials(root: Path) -> int:
    """Queue every trial that DVC does not know yet; return how many were queued."""
    _, paths, sweep = load(root)
    values = read_params(root / "params.yaml")
    known = experiments.experiments(root, sweep.baseline)
    if experiments.include_lock_file(root):
        logger.info("tune: staged dvc.lock in git (`git add dvc.lock`): queued experiments carry tracked files "
                    "only, and the lock tells each trial that the stages before %s are up to date", sweep.target)
    queued = 0
    for trial in sweep.trials:
        if trial.is_finished or trial.name in known:
            continue
        keys_in_file = {key for key in trial.params if space.lookup(values, key)[0]}
        experiments.queue(root, trial.name, experiments.set_param_arguments(trial.params, keys_in_file),
                          sweep.target, sweep.single_item, sweep.copy_paths)
        trial.status = "queued"
        state.save(sweep_file(paths), sweep)
        queued += 1
    if queued:
        logger.info("tune: queued %d trial(s) as DVC experiments", queued)
    return queued


def _params_match(trial: state.Trial, experiment: experiments.Experiment) -> bool:
    for key, value in trial.params.items():
        found, actual = space.lookup(experiment.params, key)
        if not found or (actual != value and not (isinstance(value, float) and isinstance(actual, int | float)
                                                  and abs(actual - value) <= 1e-12 * max(1.0, abs(value)))):
            return False
    return True


def _log_text(root: Path, experiment: experiments.Experiment) -> str:
    if experiment.log and Path(experiment.log).is_file():
        return Path(experiment.log).read_text(encoding="utf-8", errors="replace")
    completed = experiments.run_dvc(root, ["queue", "logs", experiment.name], check=False)
    return completed.stdout


def _record_result(root: Path, paths: Paths, trial: state.Trial, experiment: experiments.Experiment) -> None:
    """A finished trial's validation scores (its model card), per-epoch history and the stages it ran."""
    candidate = paths.candidate.relative_to(paths.root)
    card = json.loads(experiments.read_output(root, str(candidate / model_folder.CARD_FILE), experiment.rev))
    history = pd.read_csv(io.StringIO(experiments.read_output(root, str(candidate / model_folder.HISTORY_FILE),
                                                              experiment.rev)))
    validation = card["validation"]
    trial.val_loss, trial.val_accuracy = float(validation["val_loss"]), float(validation["val_accuracy"])
    trial.epoch, trial.epochs_run = int(validation["epoch"]), int(card.get("epochs_run", len(history)))
    trial.train_seconds = card.get("train_seconds")
    trial.history = {name: [float(value) for value in history[name]] for name in ("val_loss", "val_accuracy")}
    trial.stages_run = experiments.stages_run(_log_text(root, experiment))
    trial.experiment = experiment.rev
    trial.status = "done"


def _update(root: Path, paths: Paths, sweep: state.Sweep, known: dict[str, experiments.Experiment],
            missing: dict[str, int]) -> bool:
    """Bring each unfinished trial up to date with DVC's view of it; True when any changed."""
    changed = False
    now = time.time()
    for trial in sweep.trials:
        if trial.is_finished:
            continue
        experiment = known.get(trial.name)
        before = (trial.status, trial.note)
        if experiment is None:
            missing[trial.name] = missing.get(trial.name, 0) + 1
            if trial.status in ("queued", "running") and missing[trial.name] >= MISSING_POLLS:
                trial.status, trial.note = "failed", "it left DVC's queue without a result (removed by hand?)"
        elif experiment.state == "running":
            trial.status, trial.started = "running", trial.started or now
        elif experiment.state == "success":
            trial.finished = now
            if _params_match(trial, experiment):
                try:
                    _record_result(root, paths, trial, experiment)
                except Exception as error:  # noqa: BLE001  (one unreadable result must not end the whole sweep)
                    trial.status = "failed"
                    trial.note = f"finished, but its results could not be read: {type(error).__name__}: {error}"
            else:
                trial.status = "failed"
                trial.note = f"an experiment named {trial.name} exists with other params; run again with `restart`"
        elif experiment.state == "failed":
            trial.status, trial.finished = "failed", now
            trial.note = experiments.failure_reason(_log_text(root, experiment))
        else:
            trial.status = "queued"
        changed |= (trial.status, trial.note) != before
    return changed


def _stop_hopeless(root: Path, paths: Paths, sweep: state.Sweep, config: Config,
                   known: dict[str, experiments.Experiment]) -> bool:
    prune = config.tune.prune
    objective = config.tune.objective
    if prune.after_epoch is None:
        return False
    live = paths.training_reports.relative_to(paths.root) / "live"
    earlier = [trial.history.get(objective, []) for trial in sweep.trials if trial.status in ("done", "stopped")]
    changed = False
    for trial in sweep.trials:
        experiment = known.get(trial.name)
        if trial.status != "running" or experiment is None or not experiment.workdir:
            continue
        values = pruning.read_live(Path(experiment.workdir) / live, objective)
        reason = pruning.is_hopeless(values, earlier, prune.after_epoch, prune.min_trials, objective)
        if reason:
            experiments.kill(root, [trial.name])
            best = pruning.best_up_to(values, prune.after_epoch, objective)
            trial.status, trial.note, trial.finished = "stopped", reason, time.time()
            trial.history = {objective: values[: prune.after_epoch]}
            setattr(trial, objective, best)
            logger.info("tune: %s %s", trial.name, reason)
            changed = True
    return changed


def _skip_unstarted(root: Path, sweep: state.Sweep, max_minutes: float) -> bool:
    unstarted = [trial for trial in sweep.trials if trial.status in ("planned", "queued")]
    experiments.remove_queued(root, [trial.name for trial in unstarted])
    for trial in unstarted:
        trial.status, trial.note = "skipped", f"not started: the time budget (tune.max_minutes {max_minutes:g}) ran out"
    if unstarted:
        logger.info("tune: the time budget ran out; %d trial(s) not started were taken off the queue", len(unstarted))
    return bool(unstarted)


def follow(root: Path, jobs: int, poll_seconds: float = POLL_SECONDS,
           progress: Callable[[state.Sweep], None] | None = None) -> state.Sweep:
    """Start DVC's queue workers (`jobs` trials at a time) and follow the trials until every one has finished.

    Stops hopeless trials (`tune.prune`), takes unstarted trials off the queue when `tune.max_minutes` of this
    call have passed (running ones finish), and starts the workers again when they stop early (dvc#10562).
    """
    if jobs < 1:
        raise ArgumentError(f"`jobs` must be >= 1, got {jobs}")
    config, paths, sweep = load(root)
    max_minutes = config.tune.max_minutes
    deadline = time.time() + max_minutes * 60 if max_minutes else None
    threads = max(1, available_cores() // jobs) if jobs > 1 else None
    if not sweep.finished:
        experiments.start_workers(root, jobs, threads)
    stalled = 0
    missing: dict[str, int] = {}
    budget_spent = False
    failed_polls = 0
    while not sweep.finished:
        try:
            known = experiments.experiments(root, sweep.baseline)
            failed_polls = 0
        except RuntimeError as error:  # DVC reads files its workers move as it reads (a trial finishing): try again
            failed_polls += 1
            if failed_polls >= FAILED_POLLS:
                raise
            logger.debug("tune: %s; trying again", error)
            time.sleep(poll_seconds)
            continue
        changed = _update(root, paths, sweep, known, missing)
        changed |= _stop_hopeless(root, paths, sweep, config, known)
        if deadline is not None and time.time() > deadline and not budget_spent:
            changed |= _skip_unstarted(root, sweep, max_minutes)
            budget_spent = True
        if changed:
            state.save(sweep_file(paths), sweep)
            logger.info("tune: %s", ", ".join(f"{number} {status}" for status, number in _counts(sweep).items()))
            if progress is not None:
                progress(sweep)
        if sweep.finished:
            break
        waiting = any(trial.status == "queued" for trial in sweep.trials)
        anything_running = any(experiment.state == "running" for experiment in known.values())
        stalled = stalled + 1 if waiting and not anything_running else 0
        if stalled >= STALLED_POLLS and not experiments.workers_alive(root):
            logger.info("tune: trials are queued but DVC's queue workers have stopped; starting them again")
            experiments.start_workers(root, jobs, threads)
            stalled = 0
        elif stalled == STUCK_POLLS:  # a worker that lives but takes nothing (dvc#8165): say what to do, once
            logger.warning("tune: trials have waited in DVC's queue for %d polls while its worker runs nothing; "
                           "if it stays so, run `dvc queue stop --kill` and then `imgpipe tune` again", stalled)
        time.sleep(poll_seconds)
    return sweep


def report(root: Path) -> dict[str, Any]:
    """Write the trials table and the objective plot; return a summary with the best trial."""
    config, paths, sweep = load(root)
    objective = config.tune.objective
    frame = results.table(sweep, objective)
    keys = list(dict.fromkeys(key for trial in sweep.trials for key in trial.params))
    log_keys = {key for key, spec in sweep.tune.get("space", {}).items()
                if isinstance(spec, dict) and spec.get("scale") == "log"}
    table_path, plot_path = folder(paths) / "trials.parquet", folder(paths) / "objective.png"
    results.write_table(table_path, frame)
    plots.objective_plot(frame, keys, log_keys, objective, plot_path)
    best = results.best(sweep, objective)
    return {
        "sweep": sweep.sweep_id, "objective": objective, "counts": _counts(sweep), "table": str(table_path),
        "plot": str(plot_path), "sweep_file": str(sweep_file(paths)), "text": results.format_table(frame, keys),
        "best": None if best is None else {"trial": best.name, "params": best.params, "experiment": best.experiment,
                                           "val_accuracy": best.val_accuracy, "val_loss": best.val_loss},
    }


def apply_best(root: Path) -> dict[str, Any]:
    """`dvc exp apply` the best finished trial; the next `imgpipe run` evaluates it on the test split and gates it."""
    config, _, sweep = load(root)
    best = results.best(sweep, config.tune.objective)
    if best is None:
        raise RuntimeError(f"no trial of sweep {sweep.sweep_id} has finished, so there is nothing to apply; "
                           "see data/reports/tuning/trials.parquet for what became of them")
    experiments.apply(root, best.name, experiments.read_pipeline(root, sweep.target))
    values = read_params(root / "params.yaml")
    wrong = [key for key, value in best.params.items() if space.lookup(values, key) != (True, value)]
    if wrong:
        raise RuntimeError(f"dvc exp apply {best.name} left params.yaml without the trial's {', '.join(wrong)}")
    logger.info("tune: applied %s (%s) to the workspace", best.name,
                ", ".join(f"{key}={value}" for key, value in best.params.items()))
    return {"trial": best.name, "params": best.params, "experiment": best.experiment}
