"""Train stage: reads data/processed/, writes data/models/candidate/ (model.keras, labels.json, history) and dvclive logs."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import keras
import pandas as pd
from dvclive import Live

from tasks import atomic, dataset, model
from tasks.config import AugmentParams, Paths, TrainParams, load_config

logger = logging.getLogger(__name__)


class DvcLiveLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics to dvclive, so `dvc plots show` draws the training curves."""

    def __init__(self, live: Live) -> None:
        super().__init__()
        self.live = live

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for name, value in (logs or {}).items():
            if name != "learning_rate":
                self.live.log_metric(name.replace("val_", "val/") if name.startswith("val_") else f"train/{name}",
                                     float(value))
        self.live.next_step()


class EpochLogger(keras.callbacks.Callback):
    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        summary = " ".join(f"{name}={value:.4f}" for name, value in (logs or {}).items())
        logger.info("epoch %d: %s", epoch + 1, summary)


def run(params: TrainParams, augment: AugmentParams, seed: int, paths: Paths) -> Path:
    """Fit the model on the train split with early stopping on the val split; write the candidate model folder."""
    keras.utils.set_random_seed(seed)
    preprocessing = json.loads((paths.processed / "preprocess.json").read_text(encoding="utf-8"))
    labels: list[str] = preprocessing["labels"]
    image_size = int(preprocessing["image_size"])
    train_data = dataset.split_dataset(paths.processed, "train", image_size, params.batch_size, training=True,
                                       augment=augment, seed=seed)
    val_data = dataset.split_dataset(paths.processed, "val", image_size, params.batch_size, training=False)

    network = model.build(params, image_size, len(labels))
    network.compile(
        optimizer=keras.optimizers.Adam(learning_rate=params.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    live_dir = paths.training_reports / "live"
    started = time.perf_counter()
    with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        live.log_params({"train": params.model_dump(), "augment": augment.model_dump(), "seed": seed,
                         "image_size": image_size})
        history = network.fit(
            train_data,
            validation_data=val_data,
            epochs=params.epochs,
            shuffle=False,  # the dataset shuffles itself
            verbose=0,
            callbacks=[
                keras.callbacks.EarlyStopping(monitor="val_loss", patience=params.patience, restore_best_weights=True),
                DvcLiveLogger(live),
                EpochLogger(),
            ],
        )
    seconds = time.perf_counter() - started
    epochs_run = len(history.history["loss"])
    best_epoch = int(pd.Series(history.history["val_loss"]).idxmin()) + 1

    with atomic.atomic_directory(paths.candidate) as building:
        network.save(building / "model.keras")
        atomic.write_json(building / "labels.json", labels)
        pd.DataFrame(history.history).rename_axis("epoch").reset_index().to_csv(building / "history.csv", index=False)
        atomic.write_json(building / "model_card.json", {
            "model": params.model,
            "labels": labels,
            "image_size": image_size,
            "resize": preprocessing["resize"],
            "input": "uint8 RGB, rescaled to [0, 1] inside the model",
            "params": {"train": params.model_dump(), "augment": augment.model_dump(), "seed": seed},
            "epochs_run": epochs_run,
            "best_epoch": best_epoch,
            "train_seconds": round(seconds, 1),
            "keras_version": keras.__version__,
            "backend": keras.backend.backend(),
        })
    logger.info("train: %d epochs in %.1f s (best epoch %d, val_accuracy %.4f); wrote %s", epochs_run, seconds,
                best_epoch, history.history["val_accuracy"][best_epoch - 1], paths.candidate)
    return paths.candidate


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, paths = load_config()
    run(config.train, config.preprocess.augment, config.base.seed, paths)


if __name__ == "__main__":
    main()
