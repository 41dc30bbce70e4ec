"""The sweep file data/reports/tuning/sweep.json: the plan of trials and what became of each; read and written whole.

The one owner of the format. It is written under a temporary name and renamed into place after every change,
so a sweep killed at any moment (even with kill -9) leaves a plan that the next `imgpipe tune` resumes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tasks import atomic

FORMAT_VERSION = 1
# A trial's life: planned -> queued -> running -> done | failed | stopped (early, by the median rule);
# planned or queued -> skipped (the time budget ran out first).
FINISHED = ("done", "failed", "stopped", "skipped")


@dataclass
class Trial:
    name: str  # the DVC experiment's name
    params: dict[str, Any]  # dotted params key -> value
    status: str = "planned"
    experiment: str = ""  # the experiment's commit, once done
    val_loss: float | None = None  # at the kept epoch (the model card's validation)
    val_accuracy: float | None = None
    epoch: int | None = None  # the kept epoch, counted from 1
    epochs_run: int | None = None
    train_seconds: float | None = None
    history: dict[str, list[float]] = field(default_factory=dict)  # val_loss and val_accuracy per epoch
    stages_run: list[str] = field(default_factory=list)  # the stages this trial ran rather than reused
    started: float | None = None  # seconds since the epoch, as first seen running
    finished: float | None = None
    note: str = ""  # why it failed, was stopped or skipped

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED


@dataclass
class Sweep:
    sweep_id: str
    baseline: str  # the git commit the experiments derive from
    target: str  # the stage each trial reproduces (train)
    upstream: list[str]  # the stages before it, brought up to date in the workspace before queueing
    single_item: bool  # whether a trial runs the target alone (every swept key is the target's own)
    copy_paths: list[str]  # uncached outputs copied into each trial's folder when it runs earlier stages
    tune: dict[str, Any]  # the tune section the trials were planned from
    trials: list[Trial]
    created: str = ""
    version: int = FORMAT_VERSION

    def trial(self, name: str) -> Trial:
        return next(trial for trial in self.trials if trial.name == name)

    @property
    def finished(self) -> bool:
        return all(trial.is_finished for trial in self.trials)


def sweep_id(tune: dict[str, Any], other_params: dict[str, Any], baseline: str, nonce: str = "") -> str:
    """Names a sweep by what its trials depend on: the same settings on the same commit resume the same sweep.

    The budget (`max_minutes`), the early stop (`prune`) and the objective may change between runs without
    starting over: they decide what runs next and how trials rank, not what a trial is.
    """
    identity = {key: value for key, value in tune.items() if key not in ("max_minutes", "prune", "objective")}
    text = json.dumps({"tune": identity, "params": other_params, "baseline": baseline, "nonce": nonce},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def save(path: Path, sweep: Sweep) -> None:
    atomic.write_json(path, asdict(sweep))


def load(path: Path) -> Sweep | None:
    """The sweep recorded at `path`, or None when there is none (or one of an older format, which is replaced)."""
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); delete it or run imgpipe tune with `restart`") from None
    if values.get("version") != FORMAT_VERSION:
        return None
    trials = [Trial(**trial) for trial in values.pop("trials")]
    return Sweep(**values, trials=trials)
