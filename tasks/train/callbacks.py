"""Training callbacks, metric and schedules: logs epochs (dvclive, logging), keeps the best epoch and stops early in a
resumable run folder; writes only inside it."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import keras
import pandas as pd
from keras import ops

from tasks import atomic, disk_space, progress
from tasks.params import TrainParams
from tasks.scoring import selection
from tasks.train import backup

logger = logging.getLogger(__name__)


def live_name(name: str) -> str:
    """dvclive's name for a Keras log entry, flat and named for its split: `val_loss` as it is, `loss` ->
    `train_loss`, `learning_rate` -> `train_learning_rate`. Flat, because DVC joins nested names with dots, and
    `train.accuracy` in `dvc exp show` reads like a key of params.yaml's train section; it also names its plot file
    (plots/metrics/val_accuracy.tsv, with a column val_accuracy)."""
    return name if name.startswith("val_") else f"train_{name}"


class DvcLiveLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics to dvclive, so `dvc plots show` draws the training curves."""

    def __init__(self, live: Any, phase: str) -> None:
        super().__init__()
        self.live = live
        self.phase = phase

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for name, value in (logs or {}).items():
            self.live.log_metric(live_name(name), float(value), plot=True)
        self.live.next_step()


def summarise_kept_epoch(live: Any, kept: dict[str, Any]) -> None:
    """Make dvclive's metrics.json (what `dvc exp show` and `dvc metrics diff` read) describe the epoch kept, not
    the last one trained: early stopping trains `patience` epochs past the best."""
    for name, value in kept.items():
        if name in ("epoch", "phase") or not isinstance(value, (int, float)):
            continue
        live.summary[live_name(name)] = float(value)
    live.summary["kept_epoch"] = int(kept["epoch"]) + 1


def typical_epoch_seconds(durations: list[float]) -> float:
    """What an epoch takes, for the time left: the median of the epochs so far, the first left out once there are
    others (it also builds and compiles the model), so that one slow or fast epoch does not swing the estimate."""
    steady = sorted(durations[1:] if len(durations) > 1 else durations)
    middle = len(steady) // 2
    return steady[middle] if len(steady) % 2 else (steady[middle - 1] + steady[middle]) / 2


class EpochLogger(keras.callbacks.Callback):
    """One log line per epoch, numbered as Keras numbers it (so a resumed run continues the count), with the time
    the remaining epochs would take; inside a long epoch, a line every few seconds (tasks/progress.py)."""

    def __init__(self, phase: str, epochs: int | None = None, steps: int | None = None) -> None:
        super().__init__()
        self.phase, self.epochs, self.steps = phase, epochs, steps
        self.interval = progress.interval_seconds()
        self.epoch_started = self.last_line = time.monotonic()
        self.epoch = 0
        self.durations: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch
        self.epoch_started = self.last_line = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.monotonic()
        if now - self.last_line < self.interval:
            return
        self.last_line = now
        elapsed = now - self.epoch_started
        done = batch + 1
        position = f"{done}/{self.steps}" if self.steps else f"{done}"
        left = f", about {progress.duration(elapsed / done * (self.steps - done))} left in this epoch" \
            if self.steps and done < self.steps else ""
        logger.info("%s epoch %d, batch %s (%s epochs), %.1f batches/s%s", self.phase, self.epoch + 1, position,
                    self.epochs or "?", done / elapsed, left)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        summary = " ".join(f"{name}={float(value):.4g}" for name, value in (logs or {}).items())
        seconds = time.monotonic() - self.epoch_started
        self.durations.append(seconds)
        timing = f"epoch {epoch + 1} of {self.epochs}, {seconds:.1f} s" if self.epochs else f"{seconds:.1f} s"
        if self.epochs and epoch + 1 < self.epochs:
            left = typical_epoch_seconds(self.durations) * (self.epochs - epoch - 1)
            timing += f"; at most {progress.duration(left)} left, less if it stops early"
        logger.info("%s epoch %d: %s (%s)", self.phase, epoch + 1, summary, timing)


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


@keras.saving.register_keras_serializable(package="imgpipe")
class MacroF1(keras.metrics.Metric):
    """Macro-averaged F1 over every class (a class never seen nor predicted counts as 0, as in the evaluation).

    Accumulates a confusion matrix, so the validation figure is that of the whole split, not a mean over batches.
    Takes class indices or one-hot (also mixed, soft) labels. keras.ops only: any backend runs it.
    """

    def __init__(self, num_classes: int, name: str = "macro_f1", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.confusion = self.add_variable(shape=(num_classes, num_classes), initializer="zeros", name="confusion")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.convert_to_tensor(y_true)
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == self.num_classes:
            actual = ops.argmax(y_true, axis=-1)
        else:
            actual = ops.reshape(y_true, (-1,))
        actual = ops.one_hot(ops.cast(actual, "int32"), self.num_classes, dtype=self.dtype)
        predicted = ops.one_hot(ops.argmax(y_pred, axis=-1), self.num_classes, dtype=self.dtype)
        self.confusion.assign_add(ops.matmul(ops.transpose(actual), predicted))

    def result(self) -> Any:
        true_positives = ops.diagonal(self.confusion)
        denominator = ops.sum(self.confusion, axis=0) + ops.sum(self.confusion, axis=1)
        f1 = ops.where(denominator > 0, 2 * true_positives / ops.maximum(denominator, 1e-12), 0.0)
        return ops.mean(f1)

    def reset_state(self) -> None:
        self.confusion.assign(ops.zeros((self.num_classes, self.num_classes), dtype=self.dtype))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="imgpipe")
class MultiLabelMacroF1(keras.metrics.Metric):
    """Macro-averaged F1 over labels of a sigmoid head at probability `threshold` (per-label thresholds are chosen
    after training, on the validation split); a label never present nor predicted counts as 0, as in evaluation.

    Accumulates true positives, false positives and false negatives per label over the whole split. keras.ops only.
    """

    def __init__(self, num_labels: int, threshold: float = 0.5, name: str = "macro_f1", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.num_labels = num_labels
        self.threshold = threshold
        self.counts = self.add_variable(shape=(3, num_labels), initializer="zeros", name="counts")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        actual = ops.cast(ops.convert_to_tensor(y_true) >= 0.5, self.dtype)  # mixed (soft) labels: the main ones
        predicted = ops.cast(ops.convert_to_tensor(y_pred) >= self.threshold, self.dtype)
        self.counts.assign_add(ops.stack([ops.sum(actual * predicted, axis=0),
                                          ops.sum((1 - actual) * predicted, axis=0),
                                          ops.sum(actual * (1 - predicted), axis=0)]))

    def result(self) -> Any:
        true_positives, false_positives, false_negatives = self.counts[0], self.counts[1], self.counts[2]
        denominator = 2 * true_positives + false_positives + false_negatives
        f1 = ops.where(denominator > 0, 2 * true_positives / ops.maximum(denominator, 1e-12), 0.0)
        return ops.mean(f1)

    def reset_state(self) -> None:
        self.counts.assign(ops.zeros((3, self.num_labels), dtype=self.dtype))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_labels": self.num_labels, "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="imgpipe")
class SubsetAccuracy(keras.metrics.MeanMetricWrapper):
    """Multi-label accuracy: the share of images whose whole label set is right at probability 0.5."""

    def __init__(self, name: str = "accuracy", **kwargs: Any) -> None:
        super().__init__(fn=subset_accuracy, name=name, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype}


def subset_accuracy(y_true: Any, y_pred: Any) -> Any:
    actual = ops.convert_to_tensor(y_true) >= 0.5
    predicted = ops.convert_to_tensor(y_pred) >= 0.5
    return ops.cast(ops.all(ops.equal(actual, predicted), axis=-1), "float32")


def phase_callbacks(params: TrainParams, run_dir: Path, phase: str, live: Any, epochs: int | None = None,
                    steps: int | None = None) -> list[keras.callbacks.Callback]:
    """Best-epoch checkpoint with early stopping, per-epoch history, backup-and-restore and logging for one phase."""
    callbacks: list[keras.callbacks.Callback] = [
        BestWeights(run_dir, phase, params.select_on, params.patience, params.min_epochs),
        keras.callbacks.CSVLogger(str(run_dir / f"{phase}.history.csv"), append=True),
        DvcLiveLogger(live, phase),
        EpochLogger(phase, epochs, steps),
    ]
    if params.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3,
                                                           patience=max(1, params.patience // 2), min_lr=1e-6))
    # last, so that an epoch's history and checkpoint are on disk before the epoch counts as done; written
    # atomically, two whole copies kept, a damaged one set aside beside the run folders (tasks/train/backup.py)
    callbacks.append(backup.AtomicBackupAndRestore(run_dir / f"{phase}.backup", run_dir.parent / backup.DAMAGED_FOLDER,
                                                   label=f"{run_dir.name}.{phase}"))
    return callbacks


def best_weights_path(run_dir: Path, phase: str) -> Path:
    return run_dir / f"{phase}.best.weights.h5"


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the best epoch so far (selection.score_key) and stops the phase early.

    The best epoch is written under a temporary name and renamed into place, with its record beside it, so a
    resumed run keeps a model only when it is truly better, counts its patience from the true best epoch, and a
    run killed while saving never leaves a half-written file behind. Stops when `patience` epochs passed without a
    better one, never before `min_epochs`.
    """

    def __init__(self, run_dir: Path, phase: str, select_on: str = "loss", patience: int | None = None,
                 min_epochs: int = 1) -> None:
        super().__init__()
        self.weights = best_weights_path(run_dir, phase)
        self.record = run_dir / f"{phase}.best.json"
        self.select_on = select_on
        self.patience = patience
        self.min_epochs = min_epochs

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        key = list(selection.score_key(self.select_on, logs))
        best = json.loads(self.record.read_text()) if self.record.exists() else None
        if best is None or key > best["key"]:
            temporary = self.weights.with_name(f".{self.weights.stem}.partial.weights.h5")  # Keras wants .weights.h5
            try:
                self.model.save_weights(temporary, overwrite=True)
                os.replace(temporary, self.weights)
            except (OSError, RuntimeError) as error:
                if disk_space.is_full(error):
                    raise disk_space.DiskFull(self.weights.parent, "the best epoch's weights (training resumes "
                                              "from the last backup)") from error
                raise
            finally:
                temporary.unlink(missing_ok=True)
            best = {"key": key, "epoch": epoch + 1, "select_on": self.select_on,
                    "val_loss": float(logs.get("val_loss", math.nan))}
            atomic.write_json(self.record, best)
        if self.patience and epoch + 1 >= self.min_epochs and epoch + 1 - best["epoch"] >= self.patience:
            logger.info("early stop after epoch %d: no better validation %s since epoch %d", epoch + 1,
                        self.select_on, best["epoch"])
            self.model.stop_training = True


def read_history(run_dir: Path, phase: str) -> pd.DataFrame:
    """The per-epoch history of a phase, across interruptions (the last record of each epoch wins)."""
    path = run_dir / f"{phase}.history.csv"
    if not path.exists():
        return pd.DataFrame()
    history = pd.read_csv(path)
    return history.drop_duplicates("epoch", keep="last").reset_index(drop=True)
