"""The pieces of the pretrained route of training (tasks/train/on_features.py runs it): the head fitted on the cached
features, joined to its backbone into one Keras model (uint8 in, probabilities out), and the rules that decide which
challengers (a small CNN from scratch, fine-tuning) are trained against it; reads data/embeddings/ and the split
table, writes the trial record in data/models/.

Retraining cost follows new data: the backbone stays frozen and no challenger is trained unless asked, or unless
`auto` found on an earlier run with the same backbone and labels that one scored better on validation (a trial is
repeated once the training split has grown by TRIAL_AGAIN_GROWTH since).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from keras import layers

from tasks import atomic, class_balance, embedding_store, label_sets, networks
from tasks.backbones import pretrained
from tasks.params import FineTuneParams
from tasks.train import head

logger = logging.getLogger(__name__)

TRIALS_FILE = "challenger_trials.json"  # in paths.models: what `auto` learnt of the challengers, per backbone and labels
HEAD, SCRATCH, FINE_TUNE = "head", "simple_cnn", "fine_tune"  # the contenders of the pretrained route
TRIAL_AGAIN_GROWTH = 1.25
LEAVES_ROOM_BELOW = 0.99  # a head scoring this (validation) or more leaves a challenger nothing to win
MIN_GAIN = 0.01  # a challenger is kept when it beats the head on validation by at least this much


@dataclass
class SplitFeatures:
    features: np.ndarray
    truth: np.ndarray  # class indices, or multi-hot rows
    cells: list[str]  # label cells ("a;b")


def split_features(store: Path, table: pd.DataFrame, split: str, labels: list[str], multi_label: bool) -> SplitFeatures:
    rows = table[table["split"] == split]
    if rows.empty:
        raise ValueError(f"no {split} images; run the preprocess stage with more images or other "
                         "preprocess.val_fraction / test_fraction")
    cells = rows["label"].astype(str).tolist()
    truth = (label_sets.multi_hot(cells, labels).astype(np.float64) if multi_label
             else rows["label_index"].to_numpy(dtype=np.int64))
    return SplitFeatures(embedding_store.read_features(store, rows["sha256"].tolist()), truth, cells)


def fit_head(store: Path, table: pd.DataFrame, labels: list[str], multi_label: bool, select_on: str,
             class_weight: str, sampling: str) -> tuple[head.Head, SplitFeatures]:
    """The head on the train split's features, its strength chosen on the val split's; returns it and val."""
    train, val = (split_features(store, table, split, labels, multi_label) for split in ("train", "val"))
    weights = None
    if class_weight == "balanced" or sampling == "balanced":
        # for a logistic regression, drawing every class equally often is, in expectation, weighing it so
        weights = class_balance.image_weights(train.cells, labels)
    fitted = head.fit(train.features, train.truth, val.features, val.truth, len(labels), multi_label, select_on,
                      weights)
    kept = fitted.kept
    logger.info("train: head fitted on %d training images' features in %d strengths; kept strength %g (validation "
                "%s %.4f, val_loss %.4f)", len(train.features), len(fitted.history), kept["strength"], select_on,
                float(kept.get(f"val_{select_on}", kept["val_loss"])), kept["val_loss"])
    return fitted, val


def full_model(backbone_name: str, image_size: int, fitted: head.Head, dropout: float) -> keras.Model:
    """Backbone and head as one Keras model: uint8 images in, probabilities out (the rescaling is inside)."""
    features = pretrained.features_model(backbone_name, image_size)
    classes = fitted.kernel.shape[1]
    inputs = keras.Input(shape=(image_size, image_size, 3), dtype="uint8", name="image")
    x = features(inputs, training=False)  # batch-norm statistics stay ImageNet's, fine-tuned or not
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(classes, activation=networks.head_activation(fitted.multi_label), dtype="float32",
                           name="probabilities")(x)
    network = keras.Model(inputs, outputs, name=backbone_name)
    network.get_layer("probabilities").set_weights([fitted.kernel.astype(np.float32), fitted.bias.astype(np.float32)])
    return network


def trial_key(weights_id: str, image_size: int, resize: str, labels: list[str]) -> str:
    described = json.dumps([weights_id, image_size, resize, labels])
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def read_trials(models: Path) -> dict[str, Any]:
    try:
        trials = json.loads((models / TRIALS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return trials if isinstance(trials, dict) else {}


def record_trial(models: Path, key: str, record: dict[str, Any]) -> None:
    trials = read_trials(models)
    trials[key] = record
    atomic.write_json(models / TRIALS_FILE, trials)


def decide(params: FineTuneParams, head_score: float, train_images: int, classes: int,
           earlier: dict[str, Any] | None) -> tuple[list[str], str]:
    """The challengers to train against the head (SCRATCH, FINE_TUNE), and why (for the log and the model card)."""
    if params.when == "never":
        return [], "train.fine_tune.when: never"
    if params.when == "always":
        return [FINE_TUNE], "train.fine_tune.when: always"
    if head_score >= LEAVES_ROOM_BELOW:
        return [], f"it scores {head_score:.3f} on validation, leaving a challenger nothing to win"
    if train_images < params.min_images_per_class * classes:
        return [], (f"{train_images / classes:.0f} training images per class, under "
                    f"train.fine_tune.min_images_per_class ({params.min_images_per_class}): so few images are best "
                    "served by the head on frozen features")
    if earlier is not None and train_images < TRIAL_AGAIN_GROWTH * int(earlier.get("train_images", 0)):
        winner = earlier.get("winner", HEAD)
        scores = ", ".join(f"{name} {score:.3f}" for name, score in (earlier.get("scores") or {}).items())
        if winner == HEAD:
            return [], (f"on an earlier run with {earlier['train_images']} training images no challenger beat it on "
                        f"validation ({scores}); they are tried again once the training split has grown by "
                        f"{TRIAL_AGAIN_GROWTH - 1:.0%}")
        return [winner], (f"{winner} beat it on validation on an earlier run ({scores}); "
                          "train.fine_tune.when: never keeps retraining to the head alone")
    return [SCRATCH, FINE_TUNE], (f"it scores {head_score:.3f} on validation with {train_images / classes:.0f} "
                                  "training images per class; the challengers are kept only if they score better")
