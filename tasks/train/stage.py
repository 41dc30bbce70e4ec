"""Train stage: reads data/processed/, writes data/models/candidate/ (model, labels, history, model card, SavedModel)."""

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
import pandas as pd
from dvclive import Live

from tasks import atomic, model_folder, processed_store
from tasks.config import load_config
from tasks.hashing import file_sha256
from tasks.params import AugmentParams, TrainParams
from tasks.paths import Paths
from tasks.train import accelerator, augment_preview, callbacks, dataset, model

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


def _compile(network: keras.Model, rate: Any, jit_compile: bool, soft_labels: bool) -> None:
    network.compile(
        optimizer=keras.optimizers.Adam(learning_rate=rate),
        # mixup and cutmix blend labels, so they arrive one-hot (and soft) instead of as class indices
        loss="categorical_crossentropy" if soft_labels else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )


def _fit_phase(network: keras.Model, phase: str, params: TrainParams, epochs: int, rate: float,
               data: tuple[Any, Any], steps: int, run_dir: Path, live: Live, jit_compile: bool,
               soft_labels: bool) -> pd.DataFrame:
    """Train one phase to early stopping, resuming an interrupted attempt; leave the best weights in the model."""
    done_marker = run_dir / f"{phase}.done"
    best_weights = callbacks.best_weights_path(run_dir, phase)
    if not done_marker.exists():
        if (run_dir / f"{phase}.backup").exists():
            logger.info("%s: resuming an interrupted run from %s", phase, run_dir / f"{phase}.backup")
        _compile(network, callbacks.learning_rate(rate, params.schedule, params.warmup_epochs, epochs, steps),
                 jit_compile, soft_labels)
        network.fit(data[0], validation_data=data[1], epochs=epochs, shuffle=False, verbose=0,
                    callbacks=callbacks.phase_callbacks(params, run_dir, phase, live))
        done_marker.touch()
    if best_weights.exists():
        network.load_weights(best_weights)
    return callbacks.read_history(run_dir, phase).assign(phase=phase)


def run(params: TrainParams, augment: AugmentParams, seed: int, paths: Paths) -> Path:
    """Fit the model on the train split (early stopping on val), then write the candidate model folder."""
    keras.utils.set_random_seed(seed)
    if params.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    if params.weights is not None:
        params = params.model_copy(update={"weights": str(paths.resolve(params.weights))})
    preprocessing = json.loads((paths.processed / "preprocess.json").read_text(encoding="utf-8"))
    labels: list[str] = preprocessing["labels"]
    image_size = int(preprocessing["image_size"])

    training_plan = accelerator.plan(params.precision, params.jit_compile)
    distribution = accelerator.apply(training_plan)
    with distribution.scope():
        network = model.build(params, image_size, len(labels))
    batch_size = params.batch_size * distribution.replicas
    train_data = dataset.split_dataset(paths.processed, "train", image_size, batch_size, training=True,
                                       augment=augment, seed=seed)
    val_data = dataset.split_dataset(paths.processed, "val", image_size, batch_size, training=False,
                                     one_hot=augment.mixing)
    steps = callbacks.steps_per_epoch(int(preprocessing["counts"]["train"]), batch_size)

    key = callbacks.run_key(params, {"augment": augment.model_dump(), "seed": seed, "plan": str(training_plan)},
                            [paths.processed / "preprocess.json", paths.processed / "split.parquet"])
    run_dir = paths.models / ".runs" / key
    resuming = run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with Live(dir=str(paths.training_reports / "live"), dvcyaml=None, save_dvc_exp=False, report=None,
              resume=resuming) as live:
        live.log_params({"train": params.model_dump(mode="json"), "augment": augment.model_dump(), "seed": seed,
                         "image_size": image_size, "precision": training_plan.precision})
        pretrained = params.weights is not None and params.model != model.SIMPLE_CNN
        with distribution.scope():
            model.set_backbone_trainable(network, 0 if pretrained else None)
            histories = [_fit_phase(network, "train", params, params.epochs, params.learning_rate,
                                    (train_data, val_data), steps, run_dir, live, training_plan.jit_compile,
                                    augment.mixing)]
            if pretrained and params.fine_tune.epochs:
                model.set_backbone_trainable(network, params.fine_tune.unfreeze_layers)
                histories.append(_fit_phase(network, "fine_tune", params, params.fine_tune.epochs,
                                            params.fine_tune.learning_rate, (train_data, val_data), steps, run_dir,
                                            live, training_plan.jit_compile, augment.mixing))
    seconds = time.perf_counter() - started
    history = pd.concat(histories, ignore_index=True)
    best = history.loc[history["val_loss"].idxmin()]

    card = {
        "model": params.model,
        "image_size": image_size,
        "resize": preprocessing["resize"],
        "input": "uint8 RGB images of image_size x image_size, values 0-255; rescaled inside the model",
        "normalisation": "EXIF orientation applied, converted to RGB (alpha on white), resized with `resize`",
        "params": {"train": params.model_dump(mode="json"), "augment": augment.model_dump(), "seed": seed},
        # what the model learnt from: every image's path, sha256, label and split (not where the raw store keeps
        # the bytes, which `imgpipe gc` may change without changing the data)
        "data_sha256": file_sha256(paths.processed / processed_store.SPLIT_TABLE),
        "git_revision": git_revision(paths.root),
        "validation": {"phase": best["phase"], "epoch": int(best["epoch"]) + 1,
                       "val_loss": float(best["val_loss"]), "val_accuracy": float(best["val_accuracy"])},
        "epochs_run": len(history),
        "train_seconds": round(seconds, 1),
        "precision": training_plan.precision,
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
    }
    with atomic.atomic_directory(paths.candidate) as building:
        version = model_folder.write(building, network, labels, card, history)
        export_saved_model(network, building / model_folder.SAVED_MODEL_FOLDER)
    shutil.rmtree(run_dir, ignore_errors=True)
    augment_preview.run(augment, seed, paths)
    logger.info("train: %d epochs in %.1f s (best: %s epoch %d, val_accuracy %.4f); wrote model %s to %s",
                len(history), seconds, best["phase"], int(best["epoch"]) + 1, best["val_accuracy"], version,
                paths.candidate)
    return paths.candidate


def export_saved_model(network: keras.Model, target: Path) -> None:
    """A TensorFlow SavedModel for serving (TF Serving, TFLite converters); needs TensorFlow installed."""
    try:
        network.export(str(target), format="tf_saved_model", verbose=False)
    except ImportError as error:  # another backend without TensorFlow: the .keras file is still there
        logger.warning("SavedModel export skipped: %s", error)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, paths = load_config()
    run(config.train, config.preprocess.augment, config.base.seed, paths)
