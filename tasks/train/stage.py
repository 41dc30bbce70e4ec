"""Train stage: reads data/processed/ (and data/embeddings/ for a pretrained backbone), writes data/models/candidate/
(model, labels, history, model card, checksums; the export stage, tasks/export/, writes its exports apart).

The network preprocess settled on (tasks/model_choice.py) learns by one of two routes: on the images
(tasks/train/on_pixels.py) or with a head on a pretrained backbone's cached features (tasks/train/on_features.py).
"""

from __future__ import annotations

import logging
import subprocess
import warnings
from pathlib import Path
from typing import Any

import keras
from dvclive import Live

from tasks import atomic, label_sets, model_choice, model_folder, networks, processed_store
from tasks.config import load_config
from tasks.hashing import file_sha256
from tasks.params import AugmentParams, TrainParams
from tasks.paths import Paths
from tasks.train import augment_preview, backup, callbacks, lineage, on_features, on_pixels

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


def _setting_up(params: TrainParams, seed: int) -> None:
    keras.utils.set_random_seed(seed)
    if params.deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def _choice(preprocessing: dict[str, Any], params: TrainParams) -> model_choice.Choice:
    """The network preprocess settled on; for a processed folder written before it recorded one, train.model."""
    asked = preprocessing.get("model_asked")
    if asked is not None and asked != {"model": params.model, "weights": params.weights}:
        raise ValueError(f"preprocess settled the network for train.model {asked['model']} and train.weights "
                         f"{asked['weights']}, not {params.model} and {params.weights}; run the preprocess stage "
                         "again (dvc repro preprocess)")
    if "model" in preprocessing:
        return model_choice.Choice.from_record(preprocessing["model"])
    name = model_choice.SIMPLE_CNN if params.model == "auto" else params.model
    return model_choice.Choice(name, "train.model", model_choice.PIXELS)


def run(params: TrainParams, augment: AugmentParams, seed: int, paths: Paths) -> Path:
    """Train the network preprocess settled on (a head on cached features, challenged where it leaves room, or a
    network on pixels with early stopping on val), then write the candidate model folder."""
    _setting_up(params, seed)
    preprocessing = processed_store.read_summary(paths.processed)
    choice = _choice(preprocessing, params)
    if choice.model != params.model:
        logger.info("train: train.model %s is %s (%s)", params.model, choice.model, choice.reason)
    weights = params.weights
    if weights == "auto":  # the installed ImageNet weights belong to the features route; elsewhere random weights
        weights = networks.IMAGENET if choice.on_features else None
    elif weights not in (None, networks.IMAGENET):
        weights = str(paths.resolve(weights))
    params = params.model_copy(update={"model": choice.model, "weights": weights})
    labels: list[str] = preprocessing["labels"]
    image_size = int(preprocessing["image_size"])
    task = label_sets.decide_task(params.task, preprocessing.get("task") == label_sets.MULTI_LABEL)
    multi_label = task == label_sets.MULTI_LABEL
    # a run stopped mid-training (tasks/train/callbacks.py); damaged backups set aside are no run to resume
    resuming = any(path.name != backup.DAMAGED_FOLDER for path in (paths.models / ".runs").glob("*"))
    with Live(dir=str(paths.training_reports / "live"), dvcyaml=None, save_dvc_exp=False, report=None,
              resume=resuming) as live:
        live.log_params({"train": params.model_dump(mode="json"), "augment": augment.model_dump(), "seed": seed,
                         "image_size": image_size, "model_choice": choice.as_record()})
        if choice.on_features:
            trained = on_features.train(params, augment, seed, paths, preprocessing, choice, multi_label, live)
        else:
            trained = on_pixels.train(params, augment, seed, paths, preprocessing, multi_label, live)
        callbacks.summarise_kept_epoch(live, trained.best.to_dict())
    thresholds = trained.validation.pop("thresholds", None)
    best = trained.best
    card = {
        "model": params.model,
        "model_choice": choice.as_record(),  # what train.model stood for and why
        "task": task,  # multi_label: sigmoid outputs, a label given when its probability >= its threshold
        "image_size": trained.image_size,
        "resize": preprocessing["resize"],
        "input": "uint8 RGB images of image_size x image_size, values 0-255; rescaled inside the model",
        "normalisation": "EXIF orientation applied, converted to RGB (alpha on white), resized with `resize`",
        "params": {"train": params.model_dump(mode="json"), "augment": augment.model_dump(), "seed": seed},
        # what the model learnt from: every image's path, sha256, label and split (not where the raw store keeps
        # the bytes, which `imgpipe gc` may change without changing the data)
        "data_sha256": file_sha256(processed_store.table_file(paths.processed)),
        "data_lineage": lineage.data_lineage(paths),  # its source, manifest hash and a sample of its images (the gate)
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
        **trained.card,
    }
    with atomic.atomic_directory(paths.candidate) as building:
        version = model_folder.write(building, _for_saving(trained.network), labels, card, trained.history,
                                     thresholds)
    augment_preview.run(augment, seed, paths)
    kept = (f"head at regularisation strength {best['strength']:g}" if best["phase"] == "head"
            else f"{best['phase']} epoch {int(best['epoch']) + 1}")
    logger.info("train: %s in %.1f s (kept: %s, val_%s %.4f, val_loss %.4f); wrote model %s to %s",
                card["model"], trained.seconds, kept, params.select_on,
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
