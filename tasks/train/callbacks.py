"""Training callbacks and schedules: logs epochs (dvclive, logging), keeps a resumable run folder; writes only inside it."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import keras
import pandas as pd

from tasks import atomic
from tasks.params import TrainParams

logger = logging.getLogger(__name__)


class DvcLiveLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics to dvclive, so `dvc plots show` draws the training curves."""

    def __init__(self, live: Any, phase: str) -> None:
        super().__init__()
        self.live = live
        self.phase = phase

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for name, value in (logs or {}).items():
            if name == "learning_rate":
                self.live.log_metric("learning_rate", float(value), plot=True)
            elif name.startswith("val_"):
                self.live.log_metric(f"val/{name[4:]}", float(value))
            else:
                self.live.log_metric(f"train/{name}", float(value))
        self.live.next_step()


class EpochLogger(keras.callbacks.Callback):
    """One log line per epoch, numbered as Keras numbers it (so a resumed run continues the count)."""

    def __init__(self, phase: str) -> None:
        super().__init__()
        self.phase = phase

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        summary = " ".join(f"{name}={float(value):.4g}" for name, value in (logs or {}).items())
        logger.info("%s epoch %d: %s", self.phase, epoch + 1, summary)


def learning_rate(params_rate: float, schedule: str, warmup_epochs: int, epochs: int, steps_per_epoch: int) -> Any:
    """A constant rate, or cosine decay over the whole run after a linear warm-up."""
    if schedule != "cosine":
        return params_rate
    warmup_steps = min(warmup_epochs, max(epochs - 1, 0)) * steps_per_epoch
    decay_steps = max(1, epochs * steps_per_epoch - warmup_steps)
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(params_rate, decay_steps, alpha=0.01)
    return keras.optimizers.schedules.CosineDecay(
        params_rate / 10, decay_steps, alpha=0.01, warmup_target=params_rate, warmup_steps=warmup_steps
    )


def steps_per_epoch(images: int, batch_size: int) -> int:
    return max(1, math.ceil(images / batch_size))


def run_key(params: TrainParams, extra: dict[str, Any], data_files: list[Path]) -> str:
    """A name for one training configuration on one data set: a killed run resumes only into the same one."""
    digest = hashlib.sha256(json.dumps({"train": params.model_dump(mode="json"), **extra}, sort_keys=True).encode())
    for path in data_files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def phase_callbacks(params: TrainParams, run_dir: Path, phase: str, live: Any) -> list[keras.callbacks.Callback]:
    """Early stopping, best-model checkpoint, per-epoch history, backup-and-restore and logging for one phase."""
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=params.patience),
        BestWeights(run_dir, phase),
        keras.callbacks.CSVLogger(str(run_dir / f"{phase}.history.csv"), append=True),
        DvcLiveLogger(live, phase),
        EpochLogger(phase),
    ]
    if params.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3,
                                                           patience=max(1, params.patience // 2), min_lr=1e-6))
    # last, so that an epoch's history and checkpoint are on disk before the epoch counts as done; two copies,
    # so that a kill in the middle of writing one leaves the other to resume from
    callbacks.append(keras.callbacks.BackupAndRestore(str(run_dir / f"{phase}.backup"), delete_checkpoint=True,
                                                      double_checkpoint=True))
    return callbacks


def best_weights_path(run_dir: Path, phase: str) -> Path:
    return run_dir / f"{phase}.best.weights.h5"


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the lowest val_loss so far, written under a temporary name and renamed into place.

    The best value lives on disk beside them, so a resumed run keeps a model only when it is truly better, and
    a run killed while saving never leaves a half-written file behind.
    """

    def __init__(self, run_dir: Path, phase: str) -> None:
        super().__init__()
        self.weights = best_weights_path(run_dir, phase)
        self.record = run_dir / f"{phase}.best.json"

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = float((logs or {}).get("val_loss", math.inf))
        best = json.loads(self.record.read_text())["val_loss"] if self.record.exists() else math.inf
        if not value < best:
            return
        temporary = self.weights.with_name(f".{self.weights.stem}.partial.weights.h5")  # Keras wants .weights.h5
        self.model.save_weights(temporary, overwrite=True)
        os.replace(temporary, self.weights)
        atomic.write_json(self.record, {"val_loss": value, "epoch": epoch + 1})


def read_history(run_dir: Path, phase: str) -> pd.DataFrame:
    """The per-epoch history of a phase, across interruptions (the last record of each epoch wins)."""
    path = run_dir / f"{phase}.history.csv"
    if not path.exists():
        return pd.DataFrame()
    history = pd.read_csv(path)
    return history.drop_duplicates("epoch", keep="last").reset_index(drop=True)
