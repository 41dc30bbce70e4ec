"""Learning-rate range test: reads the training split in data/processed/, writes data/reports/tuning/lr_find.{csv,png}.

The model that `train` would build trains for a few hundred batches while the learning rate grows exponentially
from `min_rate` to `max_rate`; the loss of each batch is recorded until it diverges. The suggested
`train.learning_rate` is a tenth of the rate at which the smoothed loss was lowest: still on the steep part of
the curve, safely before the loss blows up (Smith, "Cyclical learning rates", 2017; fastai's lr_find).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from tasks import accelerator, atomic, model_choice, networks, processed_store, training_batches
from tasks.config import ArgumentError
from tasks.params import AugmentParams, TrainParams
from tasks.paths import Paths
from tasks.scoring import selection
from tasks.tune import lr_settings, plots

logger = logging.getLogger(__name__)

SMOOTHING = 0.9  # while running: an exponential moving average of the batch losses (bias-corrected) ...
DIVERGED = 4.0  # ... stops the test once it exceeds this many times its lowest value
MIN_STEPS_BEFORE_STOP = 10
WINDOW_SHARE = 0.05  # afterwards: a centred moving average over this share of the batches (no lag) gives the curve


@dataclass(frozen=True)
class RangeTest:
    suggested: float  # the learning rate to use: a tenth of minimum_loss_rate
    minimum_loss_rate: float  # where the smoothed loss was lowest
    steps: int  # batches trained
    table: Path  # rate, loss and smoothed loss per batch
    plot: Path


def folder(paths: Paths) -> Path:
    return paths.reports / "tuning"


def suggest(rates: np.ndarray, smoothed: np.ndarray) -> tuple[float, float]:
    """The suggested rate and the rate of the lowest smoothed loss."""
    finite = np.where(np.isfinite(smoothed), smoothed, np.inf)
    lowest = float(rates[int(np.argmin(finite))])
    return max(float(rates[0]), lowest / 10), lowest


def _check(min_rate: float, max_rate: float, steps: int) -> None:
    if not 0 < min_rate < max_rate:
        raise ArgumentError(f"`min_rate` must be > 0 and below `max_rate`, got {min_rate} and {max_rate}")
    if max_rate > 10:
        raise ArgumentError(f"`max_rate` must be <= 10, got {max_rate}")
    if steps < 2 * MIN_STEPS_BEFORE_STOP:
        raise ArgumentError(f"`steps` must be >= {2 * MIN_STEPS_BEFORE_STOP}, got {steps}")


def run(params: TrainParams, augment: AugmentParams, seed: int, paths: Paths,
        min_rate: float = lr_settings.MIN_RATE, max_rate: float = lr_settings.MAX_RATE,
        steps: int = lr_settings.STEPS) -> RangeTest:
    """Train on the training split with a growing learning rate; write the loss curve and return the suggestion."""
    _check(min_rate, max_rate, steps)
    preprocessing_file = processed_store.summary_file(paths.processed)
    if not preprocessing_file.is_file():
        raise ValueError(f"{preprocessing_file}: not found; the training split is built by the preprocess stage "
                         "(`imgpipe lr-find` runs it first; with Python, `dvc repro preprocess`)")
    keras.utils.set_random_seed(seed)
    preprocessing = processed_store.read_summary(paths.processed)
    choice = (preprocessing.get("model") or {}).get("model", params.model)
    if (preprocessing.get("model") or {}).get("route") == model_choice.HEAD_ON_FEATURES:
        raise ValueError(f"train.model {params.model} is {choice}: a head on its cached features, fitted by logistic "
                         "regression, has no learning rate to find; lr-find is for networks trained on pixels "
                         f"(train.model {', '.join((networks.SIMPLE_CNN, *networks.BACKBONES))})")
    weights = None if params.weights == "auto" else params.weights
    if weights not in (None, networks.IMAGENET):
        weights = str(paths.resolve(weights))
    params = params.model_copy(update={"model": choice if params.model == "auto" else params.model,
                                       "weights": weights})
    image_size = int(preprocessing["image_size"])
    batch_size = selection.batch_size(params.batch_size, int(preprocessing["counts"]["train"]))
    training_plan = accelerator.plan(params.precision, params.jit_compile)
    distribution = accelerator.apply(training_plan)
    with distribution.scope():
        network = networks.build(params, image_size, len(preprocessing["labels"]))
        # as in train's first phase: a pretrained backbone stays frozen while the new head learns
        networks.set_backbone_trainable(network, 0 if params.weights is not None else None)
        network.compile(optimizer=keras.optimizers.Adam(learning_rate=min_rate),
                        loss="categorical_crossentropy" if augment.mixing else "sparse_categorical_crossentropy",
                        jit_compile=training_plan.jit_compile)
    batches = training_batches.split_dataset(paths.processed, "train", image_size,
                                             batch_size * distribution.replicas, training=True, augment=augment,
                                             seed=seed).repeat()
    rates = np.geomspace(min_rate, max_rate, steps)
    losses: list[float] = []
    average, lowest = 0.0, math.inf
    for step, (images, labels) in zip(range(steps), batches):
        network.optimizer.learning_rate = float(rates[step])
        loss = float(network.train_on_batch(images, labels, return_dict=True)["loss"])
        losses.append(loss)
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        running = average / (1 - SMOOTHING ** (step + 1))
        if step >= MIN_STEPS_BEFORE_STOP and (not math.isfinite(loss) or running > DIVERGED * lowest):
            logger.info("lr-find: the loss diverged at learning rate %.3g (step %d); stopping", rates[step], step + 1)
            break
        lowest = min(lowest, running)
    tried = rates[: len(losses)]
    window = max(3, round(WINDOW_SHARE * steps) | 1)
    finite = pd.Series(losses).where(np.isfinite(losses))
    smoothed = finite.rolling(window, center=True, min_periods=1).mean().to_numpy()
    suggested, minimum_loss_rate = suggest(tried, smoothed)
    curve = pd.DataFrame({"learning_rate": tried, "loss": losses, "smoothed_loss": smoothed})
    table = folder(paths) / "lr_find.csv"
    plot = folder(paths) / "lr_find.png"
    atomic.write_csv(table, curve)
    plots.learning_rate_plot(tried, np.array(losses), smoothed, suggested, plot)
    logger.info("lr-find: %d batches from %.3g to %.3g; lowest smoothed loss at %.3g; suggested %.3g", len(losses),
                tried[0], tried[-1], minimum_loss_rate, suggested)
    return RangeTest(suggested, minimum_loss_rate, len(losses), table, plot)
