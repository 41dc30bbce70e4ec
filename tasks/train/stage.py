"""Train stage: reads data/processed/, writes data/models/candidate/ (model, labels, history, model card, exports,
engines.json)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from dvclive import Live

from tasks import atomic, embedding_store, label_sets, model_choice, model_folder, processed_store
from tasks.config import load_config
from tasks.evaluate import metrics as metric_functions
from tasks.evaluate import multilabel
from tasks.hashing import file_sha256
from tasks.params import AugmentParams, TrainParams
from tasks.paths import Paths
from tasks.train import accelerator, augment_preview, callbacks, dataset, export, model, selection, transfer

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
               soft_labels: bool, multi_label: bool,
               extra_callbacks: list[keras.callbacks.Callback] | None = None) -> pd.DataFrame:
    """Train one phase to early stopping, resuming an interrupted attempt; leave the best weights in the model."""
    done_marker = run_dir / f"{phase}.done"
    best_weights = callbacks.best_weights_path(run_dir, phase)
    if not done_marker.exists():
        if (run_dir / f"{phase}.backup").exists():
            logger.info("%s: resuming an interrupted run from %s", phase, run_dir / f"{phase}.backup")
        _compile(network, callbacks.learning_rate(rate, params.schedule, params.warmup_epochs, epochs, steps),
                 jit_compile, soft_labels, multi_label)
        network.fit(data[0], validation_data=data[1], epochs=epochs, shuffle=False, verbose=0,
                    callbacks=[*(extra_callbacks or []),
                               *callbacks.phase_callbacks(params, run_dir, phase, live, epochs, steps)])
        done_marker.touch()
    if best_weights.exists():
        network.load_weights(best_weights)
    return callbacks.read_history(run_dir, phase).assign(phase=phase)


def _validation_probabilities(network: keras.Model, processed: Path, image_size: int, batch_size: int,
                              multi_label: bool) -> tuple[np.ndarray, np.ndarray]:
    """The val split's truth and the model's probabilities, from its images."""
    truth, probabilities = [], []
    for images, classes in dataset.split_dataset(processed, "val", image_size, batch_size, training=False,
                                                 multi_label=multi_label):
        truth.append(classes.numpy())
        probabilities.append(np.asarray(network.predict_on_batch(images.numpy()), dtype=np.float64))
    return np.concatenate(truth), np.concatenate(probabilities)


def _validation_figures(truth: np.ndarray, probabilities: np.ndarray, labels: list[str], metric: str, seed: int,
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


def _keep_best_phase(network: keras.Model, history: pd.DataFrame, run_dir: Path, select_on: str) -> pd.Series:
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
    history: pd.DataFrame
    best: pd.Series  # the history row kept
    validation: dict[str, Any]  # _validation_figures()
    batch_size: int
    seconds: float
    precision: str
    card: dict[str, Any]  # what the route adds to the model card


def _setting_up(params: TrainParams, seed: int) -> None:
    keras.utils.set_random_seed(seed)
    if params.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def _choice(preprocessing: dict[str, Any], params: TrainParams) -> model_choice.Choice:
    """The network preprocess settled on; for a processed folder written before it recorded one, train.model."""
    if "model" in preprocessing:
        return model_choice.Choice.from_record(preprocessing["model"])
    name = model_choice.SIMPLE_CNN if params.model == "auto" else params.model
    return model_choice.Choice(name, "train.model", model_choice.PIXELS)


def run(params: TrainParams, augment: AugmentParams, seed: int, paths: Paths) -> Path:
    """Train the network preprocess settled on (a head on cached features, fine-tuned when it pays, or a network on
    pixels with early stopping on val), then write the candidate model folder."""
    _setting_up(params, seed)
    preprocessing = json.loads((paths.processed / processed_store.SUMMARY_FILE).read_text(encoding="utf-8"))
    choice = _choice(preprocessing, params)
    if choice.model != params.model:
        logger.info("train: train.model %s is %s (%s)", params.model, choice.model, choice.reason)
    weights = params.weights
    if weights == "auto":  # the installed ImageNet weights belong to the features route; elsewhere random weights
        weights = model.IMAGENET if choice.on_features else None
    elif weights not in (None, model.IMAGENET):
        weights = str(paths.resolve(weights))
    params = params.model_copy(update={"model": choice.model, "weights": weights})
    labels: list[str] = preprocessing["labels"]
    image_size = int(preprocessing["image_size"])
    task = label_sets.decide_task(params.task, preprocessing.get("task") == label_sets.MULTI_LABEL)
    multi_label = task == label_sets.MULTI_LABEL
    resuming = any((paths.models / ".runs").glob("*"))  # a run stopped mid-training (tasks/train/callbacks.py)
    with Live(dir=str(paths.training_reports / "live"), dvcyaml=None, save_dvc_exp=False, report=None,
              resume=resuming) as live:
        live.log_params({"train": params.model_dump(mode="json"), "augment": augment.model_dump(), "seed": seed,
                         "image_size": image_size, "model_choice": choice.as_record()})
        route = _train_on_features if choice.on_features else _train_on_pixels
        trained = route(params, augment, seed, paths, preprocessing, choice, multi_label, live)
        callbacks.summarise_kept_epoch(live, trained.best.to_dict())
    thresholds = trained.validation.pop("thresholds", None)
    best = trained.best
    card = {
        "model": params.model,
        "model_choice": choice.as_record(),  # what train.model stood for and why
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
                       "val_macro_f1": float(best.get("val_macro_f1", float("nan"))), **trained.validation},
        "batch_size": trained.batch_size,
        "epochs_run": len(trained.history),
        "train_seconds": round(trained.seconds, 1),
        "precision": trained.precision,
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "exports": list(params.exports),
        **trained.card,
    }
    with atomic.atomic_directory(paths.candidate) as building:
        version = model_folder.write(building, _for_saving(trained.network), labels, card, trained.history,
                                     thresholds)
        network_parameters = trained.network.count_params()
        write = export.run_in_fresh_process if network_parameters > export.FRESH_PROCESS_PARAMETERS else export.run
        write(building, list(params.exports), paths.processed, params.int8_calibration, seed)
    augment_preview.run(augment, seed, paths)
    kept = (f"head at regularisation strength {best['strength']:g}" if best["phase"] == "head"
            else f"{best['phase']} epoch {int(best['epoch']) + 1}")
    logger.info("train: %s in %.1f s (kept: %s, val_%s %.4f, val_loss %.4f); wrote model %s to %s",
                params.model, trained.seconds, kept, params.select_on,
                float(best.get(f"val_{params.select_on}", best["val_loss"])), best["val_loss"], version,
                paths.candidate)
    return paths.candidate


def _train_on_pixels(params: TrainParams, augment: AugmentParams, seed: int, paths: Paths,
                     preprocessing: dict[str, Any], choice: model_choice.Choice, multi_label: bool,
                     live: Live) -> Trained:
    """simple_cnn, or a keras.applications backbone, trained on the decoded images (two phases with weights)."""
    labels: list[str] = preprocessing["labels"]
    image_size = int(preprocessing["image_size"])
    train_images = int(preprocessing["counts"]["train"])
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
    logger.info("train: %s, %s, %d labels, %d training images, batch size %d (%s), %d steps per epoch; keeping the "
                "epoch with the best validation %s", params.model,
                label_sets.MULTI_LABEL if multi_label else label_sets.SINGLE_LABEL, len(labels), train_images,
                batch_size, "auto" if params.batch_size == "auto" else "train.batch_size", steps, params.select_on)

    key = callbacks.run_key(params, {"augment": augment.model_dump(), "seed": seed, "plan": str(training_plan),
                                     "multi_label": multi_label},
                            [paths.processed / "preprocess.json", paths.processed / "split.parquet"])
    run_dir = paths.models / ".runs" / key
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    live.log_params({"precision": training_plan.precision, "batch_size": batch_size})
    pretrained = params.weights is not None and params.model != model.SIMPLE_CNN
    with distribution.scope():
        model.set_backbone_trainable(network, 0 if pretrained else None)
        histories = [_fit_phase(network, "train", params, params.epochs, params.learning_rate,
                                (train_data, val_data), steps, run_dir, live, training_plan.jit_compile,
                                augment.mixing, multi_label)]
        if pretrained and params.fine_tune.when != "never":
            model.set_backbone_trainable(network, params.fine_tune.unfreeze_layers)
            histories.append(_fit_phase(network, "fine_tune", params, params.fine_tune.epochs,
                                        params.fine_tune.learning_rate, (train_data, val_data), steps, run_dir,
                                        live, training_plan.jit_compile, augment.mixing, multi_label))
    seconds = time.perf_counter() - started
    history = pd.concat(histories, ignore_index=True)
    best = _keep_best_phase(network, history, run_dir, params.select_on)
    interval_metric = "accuracy" if params.select_on == "accuracy" else "macro_f1"
    truth, probabilities = _validation_probabilities(network, paths.processed, image_size, batch_size, multi_label)
    validation = _validation_figures(truth, probabilities, labels, interval_metric, seed, multi_label)
    shutil.rmtree(run_dir, ignore_errors=True)
    return Trained(network, history, best, validation, batch_size, seconds, training_plan.precision, {})


def _train_on_features(params: TrainParams, augment: AugmentParams, seed: int, paths: Paths,
                       preprocessing: dict[str, Any], choice: model_choice.Choice, multi_label: bool,
                       live: Live) -> Trained:
    """A head on the pretrained backbone's cached features (seconds), then fine-tuning of the backbone's top layers
    on images where train.fine_tune allows it; the better on validation is kept."""
    labels: list[str] = preprocessing["labels"]
    image_size = int(preprocessing["image_size"])
    started, cpu_started = time.perf_counter(), time.process_time()
    summary = embedding_store.read_summary(paths.embeddings)
    expected = embedding_store.settings(choice.weights_id or "", image_size, preprocessing["resize"])
    if summary.get("settings") != expected:
        raise ValueError(f"{paths.embeddings}: its features were computed under {summary.get('settings')}, not "
                         f"{expected}; run the embed stage (dvc repro embed)")
    table = processed_store.read_table(paths.processed)
    fitted, val = transfer.fit_head(paths.embeddings, table, labels, multi_label, params.select_on,
                                    params.class_weight, params.sampling)
    network = transfer.full_model(choice.model, image_size, fitted, params.dropout)
    for row in fitted.history.to_dict("records"):  # one dvclive step per regularisation strength tried
        callbacks.DvcLiveLogger(live, "head").on_epoch_end(int(row["epoch"]), {
            name: value for name, value in row.items() if name not in ("epoch", "phase", "strength")})
    history, best = fitted.history, fitted.kept
    interval_metric = "accuracy" if params.select_on == "accuracy" else "macro_f1"
    head_score = float(best[f"val_{interval_metric}"])
    train_images = int(preprocessing["counts"]["train"])
    trial_key = transfer.trial_key(choice.weights_id or "", image_size, preprocessing["resize"], labels)
    fine_tune, why = transfer.decide(params.fine_tune, head_score, train_images, len(labels),
                                     transfer.read_trials(paths.models).get(trial_key))
    logger.info("train: fine-tuning %s: %s", "on" if fine_tune else "off", why)
    card: dict[str, Any] = {"backbone": {"name": choice.model, "weights": choice.weights_id, "frozen": True,
                                         "embeddings": expected},
                            "fine_tune": {"tried": fine_tune, "why": why, "head_val": head_score}}
    batch_size = selection.batch_size(params.batch_size, train_images)
    truth, probabilities = val.truth, fitted.probabilities(val.features)
    if fine_tune:
        tuned = _fine_tune(network, params, augment, seed, paths, image_size, batch_size, multi_label, live)
        tuned_best = tuned.iloc[selection.best_row(tuned, params.select_on)]
        tuned_score = float(tuned_best[f"val_{interval_metric}"])
        helped = tuned_score >= head_score + transfer.MIN_GAIN
        card["fine_tune"].update({"fine_tuned_val": tuned_score, "kept": helped,
                                  "epochs_run": len(tuned), "cpu_seconds": round(time.process_time() - cpu_started)})
        logger.info("train: fine-tuned validation %s %.4f against the head's %.4f: %s", interval_metric, tuned_score,
                    head_score, "fine-tuned model kept" if helped else
                    f"head kept (fine-tuning must win by {transfer.MIN_GAIN})")
        if params.fine_tune.when == "auto":
            transfer.record_trial(paths.models, trial_key, {"helped": helped, "head": head_score,
                                                            "fine_tuned": tuned_score, "train_images": train_images})
        history = pd.concat([history, tuned], ignore_index=True)
        if helped:
            best, card["backbone"]["frozen"] = tuned_best, False
            truth, probabilities = _validation_probabilities(network, paths.processed, image_size, batch_size,
                                                             multi_label)
        else:
            network = transfer.full_model(choice.model, image_size, fitted, params.dropout)
    validation = _validation_figures(truth, probabilities, labels, interval_metric, seed, multi_label)
    return Trained(network, history, best, validation, batch_size, time.perf_counter() - started, "float32", card)


def _fine_tune(network: keras.Model, params: TrainParams, augment: AugmentParams, seed: int, paths: Paths,
               image_size: int, batch_size: int, multi_label: bool, live: Live) -> pd.DataFrame:
    """Train the backbone's top layers with the head on augmented images, within train.fine_tune.max_minutes of
    CPU; leave the best epoch's weights in `network` and return the phase's history."""
    train_images = int(json.loads((paths.processed / processed_store.SUMMARY_FILE).read_text())["counts"]["train"])
    train_data = dataset.split_dataset(paths.processed, "train", image_size, batch_size, training=True,
                                       augment=augment, seed=seed, multi_label=multi_label,
                                       class_weight=params.class_weight, sampling=params.sampling)
    val_data = dataset.split_dataset(paths.processed, "val", image_size, batch_size, training=False,
                                     one_hot=augment.mixing, multi_label=multi_label)
    steps = callbacks.steps_per_epoch(train_images, batch_size)
    key = callbacks.run_key(params, {"augment": augment.model_dump(), "seed": seed, "phase": "fine_tune",
                                     "head": hashlib.sha256(network.get_layer("probabilities").get_weights()[0]
                                                            .tobytes()).hexdigest()},
                            [paths.processed / "preprocess.json", paths.processed / "split.parquet"])
    run_dir = paths.models / ".runs" / key
    run_dir.mkdir(parents=True, exist_ok=True)
    model.set_backbone_trainable(network, params.fine_tune.unfreeze_layers)
    budget = callbacks.CpuBudget(params.fine_tune.max_minutes * 60, "train.fine_tune.max_minutes")
    history = _fit_phase(network, "fine_tune", params, params.fine_tune.epochs, params.fine_tune.learning_rate,
                         (train_data, val_data), steps, run_dir, live, False, augment.mixing, multi_label, [budget])
    shutil.rmtree(run_dir, ignore_errors=True)
    return history


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
