"""Fitting a Keras model one phase at a time (early stopping, resumable, a CPU budget), and the kept model's
validation figures; shared by the routes of training. Reads the processed store's val split, writes the phase's
files in the run folder.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from dvclive import Live

from tasks import training_batches
from tasks.params import TrainParams
from tasks.scoring import metrics as metric_functions
from tasks.scoring import multilabel, selection
from tasks.train import callbacks

logger = logging.getLogger(__name__)


class CpuBudget(keras.callbacks.Callback):
    """Stops training after an epoch when another epoch like the slowest so far would pass `seconds` of CPU time
    (this process, all its threads) since the budget was made; the first epoch of each fit always runs. One budget
    may be shared by several fits, one after the other."""

    def __init__(self, seconds: float, setting: str) -> None:
        super().__init__()
        self.seconds, self.setting = seconds, setting
        self.started = self.epoch_started = time.process_time()
        self.slowest = 0.0

    def remaining(self) -> float:
        return self.seconds - (time.process_time() - self.started)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.slowest = 0.0  # another fit: its epochs cost what they cost

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch_started = time.process_time()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.process_time()
        self.slowest = max(self.slowest, now - self.epoch_started)
        if now - self.started + self.slowest > self.seconds:
            logger.info("stopping after epoch %d: another would pass %s (%.0f s of CPU; %.0f s used, an epoch "
                        "takes up to %.0f s)", epoch + 1, self.setting, self.seconds, now - self.started, self.slowest)
            self.model.stop_training = True


def compile_network(network: keras.Model, rate: Any, jit_compile: bool, soft_labels: bool,
                    multi_label: bool) -> None:
    classes = int(network.output_shape[-1])
    if multi_label:  # an independent yes-or-no per label: sigmoid outputs, binary cross-entropy
        loss, metrics = "binary_crossentropy", [callbacks.SubsetAccuracy(), callbacks.MultiLabelMacroF1(classes)]
    else:  # mixup and cutmix blend labels, so they arrive one-hot (and soft) instead of as class indices
        loss = "categorical_crossentropy" if soft_labels else "sparse_categorical_crossentropy"
        metrics = ["accuracy", callbacks.MacroF1(classes)]
    network.compile(optimizer=keras.optimizers.Adam(learning_rate=rate), loss=loss, metrics=metrics,
                    jit_compile=jit_compile)


def fit_phase(network: keras.Model, phase: str, params: TrainParams, epochs: int, rate: float,
              data: tuple[Any, Any], steps: int, run_dir: Path, live: Live, jit_compile: bool,
              soft_labels: bool, multi_label: bool,
              extra_callbacks: list[keras.callbacks.Callback] | None = None) -> pd.DataFrame:
    """Train one phase to early stopping, resuming an interrupted attempt; leave the best weights in the model."""
    done_marker = run_dir / f"{phase}.done"
    best_weights = callbacks.best_weights_path(run_dir, phase)
    if not done_marker.exists():
        if (run_dir / f"{phase}.backup").exists():
            logger.info("%s: resuming an interrupted run from %s", phase, run_dir / f"{phase}.backup")
        compile_network(network, callbacks.learning_rate(rate, params.schedule, params.warmup_epochs, epochs, steps),
                 jit_compile, soft_labels, multi_label)
        network.fit(data[0], validation_data=data[1], epochs=epochs, shuffle=False, verbose=0,
                    callbacks=[*(extra_callbacks or []),
                               *callbacks.phase_callbacks(params, run_dir, phase, live, epochs, steps)])
        done_marker.touch()
    if best_weights.exists():
        network.load_weights(best_weights)
    return callbacks.read_history(run_dir, phase).assign(phase=phase)


def validation_probabilities(network: keras.Model, processed: Path, image_size: int, batch_size: int,
                             multi_label: bool) -> tuple[np.ndarray, np.ndarray]:
    """The val split's truth and the model's probabilities, from its images."""
    truth, probabilities = [], []
    for images, classes in training_batches.split_dataset(processed, "val", image_size, batch_size, training=False,
                                                          multi_label=multi_label):
        truth.append(classes.numpy())
        probabilities.append(np.asarray(network.predict_on_batch(images.numpy()), dtype=np.float64))
    return np.concatenate(truth), np.concatenate(probabilities)


def validation_figures(truth: np.ndarray, probabilities: np.ndarray, labels: list[str], metric: str, seed: int,
                       multi_label: bool) -> dict[str, Any]:
    """The kept model's validation score with its 95% bootstrap interval, and a note when that is too wide to decide.

    Multi-label: first each label's threshold, chosen for the best F1 on the validation split (never on test), and
    the score at those thresholds.
    """
    figures: dict[str, Any] = {}
    if multi_label:
        thresholds = multilabel.choose_thresholds(truth, probabilities)
        predicted = probabilities >= thresholds[None, :]
        scores = multilabel.bootstrap(truth, [predicted], metric, seed)[:, 0]
        figures = {"thresholds": [float(value) for value in thresholds],
                   f"{metric}_at_thresholds": multilabel.score(truth, predicted, metric)}
    else:
        scores = metric_functions.bootstrap(truth, [probabilities.argmax(axis=1)], len(labels), metric, seed)[:, 0]
    interval = metric_functions.interval(scores)
    note = selection.interval_note("validation", metric, interval, len(truth))
    if note:
        logger.warning("train: %s", note)
    return {"interval_metric": metric, "interval": interval, "images": int(len(truth)), "note": note, **figures}


def keep_best_phase(network: keras.Model, history: pd.DataFrame, run_dir: Path, select_on: str) -> pd.Series:
    """Load the weights of the best epoch across the phases (fine-tuning may not beat the frozen phase)."""
    best = history.iloc[selection.best_row(history, select_on)]
    best_weights = callbacks.best_weights_path(run_dir, str(best["phase"]))
    if best_weights.exists():
        network.load_weights(best_weights)
    return best


@dataclass
class Trained:
    """What a route of training leaves for the model folder."""

    network: keras.Model
    image_size: int  # the model's input size
    history: pd.DataFrame
    best: pd.Series  # the history row kept
    validation: dict[str, Any]  # validation_figures()
    batch_size: int
    seconds: float
    precision: str
    card: dict[str, Any]  # what the route adds to the model card
