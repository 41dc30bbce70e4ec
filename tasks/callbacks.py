"""Training callbacks and schedules: logs epochs (dvclive, logging), keeps a resumable run folder; writes only inside it."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import keras
import pandas as pd

from tasks.config import TrainParams

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
    best_file = run_dir / f"{phase}.best.json"
    best_value = json.loads(best_file.read_text())["val_loss"] if best_file.exists() else None
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=params.patience),
        keras.callbacks.ModelCheckpoint(str(run_dir / f"{phase}.best.weights.h5"), monitor="val_loss",
                                        save_best_only=True, save_weights_only=True,
                                        initial_value_threshold=best_value),
        BestValueRecorder(best_file),
        keras.callbacks.CSVLogger(str(run_dir / f"{phase}.history.csv"), append=True),
        DvcLiveLogger(live, phase),
        EpochLogger(phase),
    ]
    if params.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3,
                                                           patience=max(1, params.patience // 2), min_lr=1e-6))
    # last, so that an epoch's history and checkpoint are on disk before the epoch counts as done
    callbacks.append(keras.callbacks.BackupAndRestore(str(run_dir / f"{phase}.backup"), delete_checkpoint=True))
    return callbacks


class BestValueRecorder(keras.callbacks.Callback):
    """Remembers the best val_loss on disk, so a resumed run's checkpoint only keeps a truly better model."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = float((logs or {}).get("val_loss", math.inf))
        best = json.loads(self.path.read_text())["val_loss"] if self.path.exists() else math.inf
        if value < best:
            self.path.write_text(json.dumps({"val_loss": value, "epoch": epoch + 1}))


def read_history(run_dir: Path, phase: str) -> pd.DataFrame:
    """The per-epoch history of a phase, across interruptions (the last record of each epoch wins)."""
    path = run_dir / f"{phase}.history.csv"
    if not path.exists():
        return pd.DataFrame()
    history = pd.read_csv(path)
    return history.drop_duplicates("epoch", keep="last").reset_index(drop=True)
