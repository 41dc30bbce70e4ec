"""Early stop of hopeless trials by the median rule; reads a running trial's per-epoch validation metrics (dvclive).

After epoch k (`tune.prune.after_epoch`), a trial whose best objective so far is worse than the median of the
earlier trials' best at epoch k is stopped, once `tune.prune.min_trials` earlier trials have reached epoch k.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

# dvclive's per-epoch files under the train stage's live folder, one per validation metric
# dvclive's per-epoch files (tasks/train/callbacks.py names them): the column of each is the file's stem
LIVE_FILES = {"val_loss": Path("plots/metrics/val_loss.tsv"), "val_accuracy": Path("plots/metrics/val_accuracy.tsv")}


def lower_is_better(objective: str) -> bool:
    return objective.endswith("loss")


def best_up_to(values: list[float], epochs: int, objective: str) -> float:
    """The best value of the first `epochs` epochs."""
    head = values[:epochs]
    return min(head) if lower_is_better(objective) else max(head)


def is_hopeless(values: list[float], earlier: list[list[float]], after_epoch: int, min_trials: int,
                objective: str) -> str:
    """Why a trial with per-epoch objective `values` should stop now, or "" when it should go on."""
    if len(values) < after_epoch:
        return ""
    reached = [best_up_to(history, after_epoch, objective) for history in earlier if len(history) >= after_epoch]
    if len(reached) < min_trials:
        return ""
    median = statistics.median(reached)
    own = best_up_to(values, after_epoch, objective)
    worse = own > median if lower_is_better(objective) else own < median
    if not worse:
        return ""
    return (f"stopped after epoch {after_epoch}: {objective} {own:.4g} was worse than the median {median:.4g} "
            f"of {len(reached)} earlier trials at that epoch")


def read_live(live_folder: Path, objective: str) -> list[float]:
    """The objective per finished epoch of a running trial, from dvclive's files ([] before the first epoch ends)."""
    path = live_folder / LIVE_FILES[objective]
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except OSError:  # not written yet, or the trial's folder went away as it finished
        return []
    column = LIVE_FILES[objective].stem
    values = []
    for row in rows:
        try:
            values.append(float(row[column]))
        except (KeyError, TypeError, ValueError):  # a row being written
            break
    return values
