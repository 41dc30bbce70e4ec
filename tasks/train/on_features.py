"""The pretrained route of training: a head on the backbone's cached features (seconds), then, where it leaves room on
validation, challengers within train.fine_tune.max_minutes of CPU: a small CNN trained from scratch (the fallback for
images unlike ImageNet's photos) and the backbone's top layers fine-tuned on augmented images. The best on validation
is kept; a challenger must beat the head by transfer.MIN_GAIN. Reads data/embeddings/, the split table and (for the
challengers) the raw store; writes the run folders and the trial record in data/models/.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from typing import Any

import keras
import pandas as pd
from dvclive import Live

from tasks import embedding_store, model_choice, networks, processed_store, training_batches
from tasks.params import AugmentParams, TrainParams
from tasks.paths import Paths
from tasks.scoring import selection
from tasks.train import callbacks, fitting, on_pixels, transfer
from tasks.train.fitting import Trained

logger = logging.getLogger(__name__)

SCRATCH, FINE_TUNE, HEAD = transfer.SCRATCH, transfer.FINE_TUNE, transfer.HEAD
SMALLEST_USEFUL_BUDGET = 60.0  # seconds of CPU: fine-tuning a backbone in less is not worth starting


def _head(params: TrainParams, seed: int, paths: Paths, preprocessing: dict[str, Any], choice: model_choice.Choice,
          multi_label: bool, live: Live, metric: str) -> Trained:
    """The head on the cached features, joined to the frozen backbone."""
    labels: list[str] = preprocessing["labels"]
    image_size = int(preprocessing["image_size"])
    started = time.perf_counter()
    expected = embedding_store.settings(choice.weights_id or "", image_size, preprocessing["resize"])
    stored = embedding_store.read_summary(paths.embeddings).get("settings")
    if stored != expected:
        raise ValueError(f"{paths.embeddings}: its features were computed under {stored}, not {expected}; run the "
                         "embed stage (dvc repro embed)")
    table = processed_store.read_table(paths.processed)
    fitted, val = transfer.fit_head(paths.embeddings, table, labels, multi_label, params.select_on,
                                    params.class_weight, params.sampling)
    for row in fitted.history.to_dict("records"):  # one dvclive step per regularisation strength tried
        callbacks.DvcLiveLogger(live, HEAD).on_epoch_end(int(row["epoch"]), {
            name: value for name, value in row.items() if name not in ("epoch", "phase", "strength")})
    network = transfer.full_model(choice.model, image_size, fitted, params.dropout)
    validation = fitting.validation_figures(val.truth, fitted.probabilities(val.features), labels, metric, seed,
                                            multi_label)
    card = {"backbone": {"name": choice.model, "weights": choice.weights_id, "frozen": True, "embeddings": expected}}
    batch_size = selection.batch_size(params.batch_size, int(preprocessing["counts"]["train"]))
    return Trained(network, image_size, fitted.history, fitted.kept, validation, batch_size,
                   time.perf_counter() - started, "float32", card)


def _scratch(params: TrainParams, augment: AugmentParams, seed: int, paths: Paths, preprocessing: dict[str, Any],
             multi_label: bool, live: Live, budget: fitting.CpuBudget) -> Trained:
    """simple_cnn from random weights, at the size preprocess.image_size auto would give it, on the raw images."""
    scratch_params = params.model_copy(update={"model": model_choice.SIMPLE_CNN, "weights": None})
    size = int(preprocessing.get("scratch_image_size") or preprocessing["image_size"])
    trained = on_pixels.train(scratch_params, augment, seed, paths, preprocessing, multi_label, live, size, budget)
    trained.history = trained.history.assign(phase=SCRATCH)
    trained.best = trained.best.copy()
    trained.best["phase"] = SCRATCH
    trained.card = {"model": model_choice.SIMPLE_CNN, "backbone": None}
    return trained


def _fine_tune(head: Trained, params: TrainParams, augment: AugmentParams, seed: int, paths: Paths,
               preprocessing: dict[str, Any], multi_label: bool, live: Live, budget: fitting.CpuBudget,
               metric: str) -> Trained:
    """The backbone's top layers and the head trained together on augmented images, from the head's weights."""
    labels: list[str] = preprocessing["labels"]
    image_size, batch_size = head.image_size, head.batch_size
    started = time.perf_counter()
    network = keras.Model.from_config(head.network.get_config())
    network.set_weights(head.network.get_weights())
    train_data = training_batches.split_dataset(paths.processed, "train", image_size, batch_size, training=True,
                                                augment=augment, seed=seed, multi_label=multi_label,
                                                class_weight=params.class_weight, sampling=params.sampling)
    val_data = training_batches.split_dataset(paths.processed, "val", image_size, batch_size, training=False,
                                              one_hot=augment.mixing, multi_label=multi_label)
    steps = callbacks.steps_per_epoch(int(preprocessing["counts"]["train"]), batch_size)
    head_digest = hashlib.sha256(network.get_layer("probabilities").get_weights()[0].tobytes()).hexdigest()
    key = callbacks.run_key(params, {"augment": augment.model_dump(), "seed": seed, "phase": FINE_TUNE,
                                     "head": head_digest},
                            [processed_store.summary_file(paths.processed),
                             processed_store.table_file(paths.processed)])
    run_dir = paths.models / ".runs" / key
    run_dir.mkdir(parents=True, exist_ok=True)
    networks.set_backbone_trainable(network, params.fine_tune.unfreeze_layers)
    history = fitting.fit_phase(network, FINE_TUNE, params, params.fine_tune.epochs, params.fine_tune.learning_rate,
                                (train_data, val_data), steps, run_dir, live, False, augment.mixing, multi_label,
                                [budget])
    shutil.rmtree(run_dir, ignore_errors=True)
    best = history.iloc[selection.best_row(history, params.select_on)]
    truth, probabilities = fitting.validation_probabilities(network, paths.processed, image_size, batch_size,
                                                            multi_label)
    validation = fitting.validation_figures(truth, probabilities, labels, metric, seed, multi_label)
    card = {"backbone": {**head.card["backbone"], "frozen": False}}
    return Trained(network, image_size, history, best, validation, batch_size, time.perf_counter() - started,
                   "float32", card)


def train(params: TrainParams, augment: AugmentParams, seed: int, paths: Paths, preprocessing: dict[str, Any],
          choice: model_choice.Choice, multi_label: bool, live: Live) -> Trained:
    """The head, then the challengers train.fine_tune allows; the best on validation, with what was tried in its
    model card."""
    metric = "accuracy" if params.select_on == "accuracy" else "macro_f1"
    head = _head(params, seed, paths, preprocessing, choice, multi_label, live, metric)
    scores = {HEAD: float(head.best[f"val_{metric}"])}
    train_images, classes = int(preprocessing["counts"]["train"]), len(preprocessing["labels"])
    key = transfer.trial_key(choice.weights_id or "", head.image_size, preprocessing["resize"],
                             preprocessing["labels"])
    challengers, why = transfer.decide(params.fine_tune, scores[HEAD], train_images, classes,
                                       transfer.read_trials(paths.models).get(key))
    logger.info("train: %s", f"trying {' and '.join(challengers)} against the head: {why}" if challengers
                else f"the head alone: {why}")
    budget = fitting.CpuBudget(params.fine_tune.max_minutes * 60, "train.fine_tune.max_minutes")
    contenders: dict[str, Trained] = {HEAD: head}
    for challenger in challengers:
        if challenger == FINE_TUNE and budget.remaining() < SMALLEST_USEFUL_BUDGET:
            logger.info("train: fine-tuning skipped: %.0f s of train.fine_tune.max_minutes left", budget.remaining())
            continue
        trained = (_scratch(params, augment, seed, paths, preprocessing, multi_label, live, budget)
                   if challenger == SCRATCH else
                   _fine_tune(head, params, augment, seed, paths, preprocessing, multi_label, live, budget, metric))
        contenders[challenger] = trained
        scores[challenger] = float(trained.best[f"val_{metric}"])
        logger.info("train: %s: validation %s %.4f against the head's %.4f", challenger, metric, scores[challenger],
                    scores[HEAD])
    winner = max(contenders, key=lambda name: scores[name] - (0 if name == HEAD else transfer.MIN_GAIN))
    if challengers:
        logger.info("train: kept %s (a challenger must beat the head by %s on validation)", winner,
                    transfer.MIN_GAIN)
        if params.fine_tune.when == "auto":
            transfer.record_trial(paths.models, key, {"winner": winner, "scores": scores,
                                                      "train_images": train_images})
    kept = contenders[winner]
    kept.history = pd.concat([contender.history for contender in contenders.values()], ignore_index=True)
    kept.card = {**kept.card, "challengers": {"tried": list(contenders)[1:], "why": why, "val_scores": scores,
                                              "kept": winner, "metric": metric}}
    return kept
