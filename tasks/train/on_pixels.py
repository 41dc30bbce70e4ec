"""The pixels route of training: simple_cnn, or a keras.applications backbone, trained on decoded images with early
stopping on the val split; reads data/processed/ (or the raw store), writes the run folder in data/models/.runs/.
"""

from __future__ import annotations

import logging
import shutil
import time
from typing import Any

import pandas as pd
from dvclive import Live

from tasks import accelerator, label_sets, networks, processed_store, training_batches
from tasks.params import AugmentParams, TrainParams
from tasks.paths import Paths
from tasks.scoring import selection
from tasks.train import callbacks, fitting
from tasks.train.fitting import Trained

logger = logging.getLogger(__name__)


def train(params: TrainParams, augment: AugmentParams, seed: int, paths: Paths, preprocessing: dict[str, Any],
          multi_label: bool, live: Live, image_size: int | None = None,
          budget: fitting.CpuBudget | None = None) -> Trained:
    """simple_cnn, or a keras.applications backbone, trained on the decoded images (two phases with weights), at
    preprocess's image size or `image_size` (decoded from the raw store when preprocess kept no pixels of that size),
    within `budget` when one is given."""
    labels: list[str] = preprocessing["labels"]
    image_size = image_size or int(preprocessing["image_size"])
    train_images = int(preprocessing["counts"]["train"])
    training_plan = accelerator.plan(params.precision, params.jit_compile)
    distribution = accelerator.apply(training_plan)
    with distribution.scope():
        network = networks.build(params, image_size, len(labels), multi_label)
    batch_size = selection.batch_size(params.batch_size, train_images, distribution.replicas) * distribution.replicas
    train_data = training_batches.split_dataset(paths.processed, "train", image_size, batch_size, training=True,
                                                augment=augment, seed=seed, multi_label=multi_label,
                                                class_weight=params.class_weight, sampling=params.sampling)
    val_data = training_batches.split_dataset(paths.processed, "val", image_size, batch_size, training=False,
                                              one_hot=augment.mixing, multi_label=multi_label)
    if params.class_weight == "balanced" and params.sampling == "balanced":
        logger.warning("train: class_weight balanced and sampling balanced both correct the imbalance, so minority "
                       "classes end up over-weighted; usually one of them is enough")
    steps = callbacks.steps_per_epoch(train_images, batch_size)
    logger.info("train: %s, %s, %d labels, %d training images, batch size %d (%s), %d steps per epoch; keeping the "
                "epoch with the best validation %s", params.model,
                label_sets.MULTI_LABEL if multi_label else label_sets.SINGLE_LABEL, len(labels), train_images,
                batch_size, "auto" if params.batch_size == "auto" else "train.batch_size", steps, params.select_on)

    key = callbacks.run_key(params, {"augment": augment.model_dump(), "seed": seed, "plan": str(training_plan),
                                     "multi_label": multi_label,
                                     "image_size": image_size},
                            [processed_store.summary_file(paths.processed),
                             processed_store.table_file(paths.processed)])
    run_dir = paths.models / ".runs" / key
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    live.log_params({"precision": training_plan.precision, "batch_size": batch_size})
    pretrained = params.weights is not None and params.model != networks.SIMPLE_CNN
    if params.model != networks.SIMPLE_CNN and params.weights is None:
        logger.warning("train: %s starts from random weights (what train.weights auto or null gives it): it learns "
                       "everything from these images, which takes many images and epochs; for its ImageNet weights "
                       "set train.weights: imagenet (downloaded by Keras) or a file from `imgpipe weights fetch`",
                       params.model)
    with distribution.scope():
        networks.set_backbone_trainable(network, 0 if pretrained else None)
        histories = [fitting.fit_phase(network, "train", params, params.epochs, params.learning_rate,
                                       (train_data, val_data), steps, run_dir, live, training_plan.jit_compile,
                                       augment.mixing, multi_label, [budget] if budget else None)]
        if pretrained and params.fine_tune.when != "never":
            networks.set_backbone_trainable(network, params.fine_tune.unfreeze_layers)
            histories.append(fitting.fit_phase(network, "fine_tune", params, params.fine_tune.epochs,
                                               params.fine_tune.learning_rate, (train_data, val_data), steps,
                                               run_dir, live, training_plan.jit_compile, augment.mixing,
                                               multi_label))
    seconds = time.perf_counter() - started
    history = pd.concat(histories, ignore_index=True)
    best = fitting.keep_best_phase(network, history, run_dir, params.select_on)
    interval_metric = "accuracy" if params.select_on == "accuracy" else "macro_f1"
    truth, probabilities = fitting.validation_probabilities(network, paths.processed, image_size, batch_size,
                                                            multi_label)
    validation = fitting.validation_figures(truth, probabilities, labels, interval_metric, seed, multi_label)
    shutil.rmtree(run_dir, ignore_errors=True)
    return Trained(network, image_size, history, best, validation, batch_size, seconds, training_plan.precision, {})
