"""Train stage: reads data/processed/, writes data/models/candidate/ (model, labels, history, model card, exports,
engines.json)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from dvclive import Live

from tasks import atomic, label_sets, model_folder, processed_store
from tasks.config import load_config
from tasks.evaluate import metrics as metric_functions
from tasks.evaluate import multilabel
from tasks.hashing import file_sha256
from tasks.params import AugmentParams, TrainParams
from tasks.paths import Paths
from tasks.train import accelerator, augment_preview, callbacks, dataset, export, model, selection

logger = logging.getLogger(__name__)

# Keras warns at the end of the first epoch that a dataset of unknown length "ran out of data": expected here.
warnings.filterwarnings("ignore", message="Your input ran out of data")


def git_revision(root: Path) -> str:
    """The commit the code was run from, with `+dirty` when the working tree differs; `unknown` outside git."""
    try:
        revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                  check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return revision + ("+dirty" if dirty else "")


def _compile(network: keras.Model, rate: Any, jit_compile: bool, soft_labels: bool, multi_label: bool) -> None:
    classes = int(network.output_shape[-1])
    if multi_label:  # an independent yes-or-no per label: sigmoid outputs, binary cross-entropy
        loss, metrics = "binary_crossentropy", [callbacks.SubsetAccuracy(), callbacks.MultiLabelMacroF1(classes)]
    else:  # mixup and cutmix blend labels, so they arrive one-hot (and soft) instead of as class indices
        loss = "categorical_crossentropy" if soft_labels else "sparse_categorical_crossentropy"
        metrics = ["accuracy", callbacks.MacroF1(classes)]
    network.compile(optimizer=keras.optimizers.Adam(learning_rate=rate), loss=loss, metrics=metrics,
                    jit_compile=jit_compile)


def _fit_phase(network: keras.Model, phase: str, params: TrainParams, epochs: int, rate: float,
               data: tuple[Any, Any], steps: int, run_dir: Path, live: Live, jit_compile: bool,
               soft_labels: bool, multi_label: bool) -> pd.DataFrame:
    """Train one phase to early stopping, resuming an interrupted attempt; leave the best weights in the model."""
    done_marker = run_dir / f"{phase}.done"
    best_weights = callbacks.best_weights_path(run_dir, phase)
    if not done_marker.exists():
        if (run_dir / f"{phase}.backup").exists():
            logger.info("%s: resuming an interrupted run from %s", phase, run_dir / f"{phase}.backup")
        _compile(network, callbacks.learning_rate(rate, params.schedule, params.warmup_epochs, epochs, steps),
                 jit_compile, soft_labels, multi_label)
        network.fit(data[0], validation_data=data[1], epochs=epochs, shuffle=False, verbose=0,
                    callbacks=callbacks.phase_callbacks(params, run_dir, phase, live, epochs, steps))
        done_marker.touch()
    if best_weights.exists():
        network.load_weights(best_weights)
    return callbacks.read_history(run_dir, phase).assign(phase=phase)


def _validation_figures(network: keras.Model, processed: Path, image_size: int, batch_size: int,
                        labels: list[str], metric: str, seed: int, multi_label: bool) -> dict[str, Any]:
    """The kept model's validation score with its 95% bootstrap interval, and a note when that is too wide to decide.

    Multi-label: first each label's threshold, chosen for the best F1 on the validation split (never on test), and
    the score at those thresholds.
    """
    truth, probabilities = [], []
    for images, classes in dataset.split_dataset(processed, "val", image_size, batch_size, training=False,
                                                 multi_label=multi_label):
        truth.append(classes.numpy())
        probabilities.append(np.asarray(network.predict_on_batch(images.numpy()), dtype=np.float64))
    truth, probabilities = np.concatenate(truth), np.concatenate(probabilities)
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


def _keep_best_phase(network: keras.Model, history: pd.DataFrame, run_dir: Path, select_on: str) -> pd.Series:
    """Load the weights of the best epoch across the phases (fine-tuning may not beat the frozen phase)."""
    best = history.iloc[selection.best_row(history, select_on)]
    best_weights = callbacks.best_weights_path(run_dir, str(best["phase"]))
    if best_weights.exists():
        network.load_weights(best_weights)
    return best


def run(params: TrainParams, augment: AugmentParams, seed: int, paths: Paths) -> Path:
    """Fit the model on the train split (early stopping on val), then write the candidate model folder."""
    keras.utils.set_random_seed(seed)
    if params.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    if params.weights not in (None, model.IMAGENET):
        params = params.model_copy(update={"weights": str(paths.resolve(params.weights))})
    preprocessing = json.loads((paths.processed / "preprocess.json").read_text(encoding="utf-8"))
    labels: list[str] = preprocessing["labels"]
    image_size = int(preprocessing["image_size"])
    train_images = int(preprocessing["counts"]["train"])
    task = label_sets.decide_task(params.task, preprocessing.get("task") == label_sets.MULTI_LABEL)
    multi_label = task == label_sets.MULTI_LABEL

    training_plan = accelerator.plan(params.precision, params.jit_compile)
    distribution = accelerator.apply(training_plan)
    with distribution.scope():
        network = model.build(params, image_size, len(labels), multi_label)
    batch_size = selection.batch_size(params.batch_size, train_images, distribution.replicas) * distribution.replicas
    train_data = dataset.split_dataset(paths.processed, "train", image_size, batch_size, training=True,
                                       augment=augment, seed=seed, multi_label=multi_label,
                                       class_weight=params.class_weight, sampling=params.sampling)
    val_data = dataset.split_dataset(paths.processed, "val", image_size, batch_size, training=False,
                                     one_hot=augment.mixing, multi_label=multi_label)
    if params.class_weight == "balanced" and params.sampling == "balanced":
        logger.warning("train: class_weight balanced and sampling balanced both correct the imbalance, so minority "
                       "classes end up over-weighted; usually one of them is enough")
    steps = callbacks.steps_per_epoch(train_images, batch_size)
    logger.info("train: %s, %d labels, %d training images, batch size %d (%s), %d steps per epoch; keeping the epoch "
                "with the best validation %s", task, len(labels), train_images, batch_size,
                "auto" if params.batch_size == "auto" else "train.batch_size", steps, params.select_on)

    key = callbacks.run_key(params, {"augment": augment.model_dump(), "seed": seed, "plan": str(training_plan),
                                     "task": task},
                            [paths.processed / "preprocess.json", paths.processed / "split.parquet"])
    run_dir = paths.models / ".runs" / key
    resuming = run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with Live(dir=str(paths.training_reports / "live"), dvcyaml=None, save_dvc_exp=False, report=None,
              resume=resuming) as live:
        live.log_params({"train": params.model_dump(mode="json"), "augment": augment.model_dump(), "seed": seed,
                         "image_size": image_size, "precision": training_plan.precision, "batch_size": batch_size})
        pretrained = params.weights is not None and params.model != model.SIMPLE_CNN
        with distribution.scope():
            model.set_backbone_trainable(network, 0 if pretrained else None)
            histories = [_fit_phase(network, "train", params, params.epochs, params.learning_rate,
                                    (train_data, val_data), steps, run_dir, live, training_plan.jit_compile,
                                    augment.mixing, multi_label)]
            if pretrained and params.fine_tune.epochs:
                model.set_backbone_trainable(network, params.fine_tune.unfreeze_layers)
                histories.append(_fit_phase(network, "fine_tune", params, params.fine_tune.epochs,
                                            params.fine_tune.learning_rate, (train_data, val_data), steps, run_dir,
                                            live, training_plan.jit_compile, augment.mixing, multi_label))
        seconds = time.perf_counter() - started
        history = pd.concat(histories, ignore_index=True)
        best = _keep_best_phase(network, history, run_dir, params.select_on)
        callbacks.summarise_kept_epoch(live, best.to_dict())
    interval_metric = "accuracy" if params.select_on == "accuracy" else "macro_f1"
    validation = _validation_figures(network, paths.processed, image_size, batch_size, labels, interval_metric, seed,
                                     multi_label)
    thresholds = validation.pop("thresholds", None)

    card = {
        "model": params.model,
        "task": task,  # multi_label: sigmoid outputs, a label given when its probability >= its threshold
        "image_size": image_size,
        "resize": preprocessing["resize"],
        "input": "uint8 RGB images of image_size x image_size, values 0-255; rescaled inside the model",
        "normalisation": "EXIF orientation applied, converted to RGB (alpha on white), resized with `resize`",
        "params": {"train": params.model_dump(mode="json"), "augment": augment.model_dump(), "seed": seed},
        # what the model learnt from: every image's path, sha256, label and split (not where the raw store keeps
        # the bytes, which `imgpipe gc` may change without changing the data)
        "data_sha256": file_sha256(paths.processed / processed_store.SPLIT_TABLE),
        "git_revision": git_revision(paths.root),
        "validation": {"phase": best["phase"], "epoch": int(best["epoch"]) + 1, "selected_on": params.select_on,
                       "val_loss": float(best["val_loss"]), "val_accuracy": float(best["val_accuracy"]),
                       "val_macro_f1": float(best.get("val_macro_f1", float("nan"))), **validation},
        "batch_size": batch_size,
        "epochs_run": len(history),
        "train_seconds": round(seconds, 1),
        "precision": training_plan.precision,
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "exports": list(params.exports),
    }
    with atomic.atomic_directory(paths.candidate) as building:
        version = model_folder.write(building, _for_saving(network), labels, card, history, thresholds)
        write = export.run_in_fresh_process if network.count_params() > export.FRESH_PROCESS_PARAMETERS else export.run
        write(building, list(params.exports), paths.processed, params.int8_calibration, seed)
    shutil.rmtree(run_dir, ignore_errors=True)
    augment_preview.run(augment, seed, paths)
    logger.info("train: %d epochs in %.1f s (kept: %s epoch %d, val_%s %.4f, val_loss %.4f); wrote model %s to %s",
                len(history), seconds, best["phase"], int(best["epoch"]) + 1, params.select_on,
                float(best.get(f"val_{params.select_on}", best["val_loss"])), best["val_loss"], version,
                paths.candidate)
    return paths.candidate


def _for_saving(network: keras.Model) -> keras.Model:
    """An uncompiled copy of the trained model, rebuilt from its config as loading rebuilds it: model.keras then
    holds no optimizer state (a third of the size with Adam) and no custom metric that a user loading it without
    imgpipe could not deserialise."""
    copy = type(network).from_config(network.get_config())
    copy.set_weights(network.get_weights())
    return copy


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, paths = load_config()
    run(config.train, config.preprocess.augment, config.base.seed, paths)
