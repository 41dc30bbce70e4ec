"""The results of a sweep: a table of trials (params, scores, what each re-ran) and the best trial; writes the Parquet.

Trials rank by `tune.objective`, a validation metric at the kept epoch (val_accuracy: higher is better; val_loss:
lower is better), ties broken by the other one. Only finished trials (`done`) rank; the test split is never read.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks import atomic
from tasks.tune.pruning import lower_is_better
from tasks.tune.state import Sweep, Trial

BASE_COLUMNS = ["trial", "status", "rank", "objective", "val_accuracy", "val_loss", "epoch", "epochs_run",
                "train_seconds", "seconds", "stages_run", "experiment", "note"]


def _sort_key(trial: Trial, objective: str) -> tuple[float, float, str]:
    loss = trial.val_loss if trial.val_loss is not None else float("inf")
    accuracy = trial.val_accuracy if trial.val_accuracy is not None else float("-inf")
    if lower_is_better(objective):
        return (loss, -accuracy, trial.name)
    return (-accuracy, loss, trial.name)


def ranked(sweep: Sweep, objective: str) -> list[Trial]:
    """The finished trials, best first."""
    done = [trial for trial in sweep.trials if trial.status == "done"]
    return sorted(done, key=lambda trial: _sort_key(trial, objective))


def best(sweep: Sweep, objective: str) -> Trial | None:
    order = ranked(sweep, objective)
    return order[0] if order else None


def table(sweep: Sweep, objective: str) -> pd.DataFrame:
    """One row per trial in plan order: its name and status, each swept key, scores, seconds, what it re-ran."""
    ranks = {trial.name: position for position, trial in enumerate(ranked(sweep, objective), start=1)}
    keys = list(dict.fromkeys(key for trial in sweep.trials for key in trial.params))
    rows = []
    for trial in sweep.trials:
        seconds = (trial.finished - trial.started) if trial.started and trial.finished else None
        score = trial.val_loss if lower_is_better(objective) else trial.val_accuracy
        rows.append({
            "trial": trial.name, "status": trial.status, "rank": ranks.get(trial.name),
            "objective": score if trial.status == "done" else None,
            "val_accuracy": trial.val_accuracy, "val_loss": trial.val_loss, "epoch": trial.epoch,
            "epochs_run": trial.epochs_run, "train_seconds": trial.train_seconds, "seconds": seconds,
            "stages_run": ",".join(trial.stages_run), "experiment": trial.experiment, "note": trial.note,
            **{key: trial.params.get(key) for key in keys},
        })
    frame = pd.DataFrame(rows, columns=BASE_COLUMNS[:3] + keys + BASE_COLUMNS[3:])
    for column in ("rank", "epoch", "epochs_run"):
        frame[column] = frame[column].astype("Int64")
    for key in keys:  # a column of mixed types (a list of values like [16, "auto"]) is stored as text
        if frame[key].map(type).nunique() > 1:
            frame[key] = frame[key].map(lambda value: None if value is None else str(value))
    frame.attrs["objective"] = objective
    return frame


def write_table(path: Path, frame: pd.DataFrame) -> None:
    atomic.write_parquet(path, frame)


def format_table(frame: pd.DataFrame, keys: list[str]) -> str:
    """The table as plain text for a terminal, best first, then unfinished trials in plan order."""
    shown = frame.sort_values(["rank", "trial"], na_position="last")
    header = f"  {'rank':>4}  {'trial':<18}{'status':<9}" + "".join(f"{key:>22}" for key in keys) + \
             f"{'val_acc':>9}{'val_loss':>9}{'epoch':>6}{'reran':>13}"
    lines = [header]
    for values in shown.to_dict("records"):
        cells = "".join(f"{_cell(values[key]):>22}" for key in keys)
        lines.append(f"  {_cell(values['rank']):>4}  {values['trial']:<18}{values['status']:<9}{cells}"
                     f"{_cell(values['val_accuracy']):>9}{_cell(values['val_loss']):>9}{_cell(values['epoch']):>6}"
                     f"{values['stages_run'] or '-':>13}")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
