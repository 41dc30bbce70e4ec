"""Accuracy benchmark: imgpipe's default params against the keras-io "image classification from scratch" recipe.

Both train on the clothing photos (../shared/datasets/clothing-dataset-small, 713 JPEGs, 10 classes) with the same
train/val/test split (imgpipe's), the same image size and the same CPU, in one run. Prints test accuracy and wall
time of each and exits non-zero unless imgpipe is clearly more accurate (by --margin) in no more wall time.

    .venv/bin/python benchmarks/accuracy.py [--image-size N] [--recipe-epochs 25]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
import machine  # noqa: E402  (benchmarks/machine.py, beside this script)

import keras  # noqa: E402
import pandas as pd  # noqa: E402
from keras import layers  # noqa: E402

from tasks.config import load_config  # noqa: E402
from tasks.evaluate import stage as evaluate  # noqa: E402
from tasks.ingest import stage as ingest  # noqa: E402
from tasks.paths import Paths  # noqa: E402
from tasks.preprocess import stage as preprocess  # noqa: E402
from tasks.train import stage as train  # noqa: E402

DATASET = machine.PHOTOS


def gather_source(target: Path) -> Path:
    """One folder per class holding the photos of both published splits (imgpipe makes its own split)."""
    for path in DATASET.glob("*/*/*.jpg"):
        published_split, label = path.parent.parent.name, path.parent.name
        (target / label).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / label / f"{published_split}_{path.name}")
    return target


def run_imgpipe(workspace: Path, source: Path, image_size: int) -> tuple[float, float, Paths]:
    config, _ = load_config(PROJECT_ROOT / "params.yaml", overrides={
        "ingest.source": str(source), "preprocess.image_size": image_size})
    paths = Paths(config.paths, workspace)
    started = time.perf_counter()
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    train.run(config.train, config.preprocess.augment, config.base.seed, paths)
    metrics = evaluate.run(config.evaluate, config.base.seed, config.ingest.max_pixels, paths)
    return metrics["accuracy"], time.perf_counter() - started, paths


def recipe_model(image_size: int, num_classes: int) -> keras.Model:
    """The small Xception-like network of the keras-io recipe, with a softmax head for several classes."""
    inputs = keras.Input(shape=(image_size, image_size, 3))
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Conv2D(128, 3, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    previous = x
    for size in (256, 512, 728):
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(size, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(size, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        x = layers.add([x, layers.Conv2D(size, 1, strides=2, padding="same")(previous)])
        previous = x
    x = layers.SeparableConv2D(1024, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.25)(x)
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))


def run_recipe(workspace: Path, paths: Paths, image_size: int, epochs: int, seed: int) -> tuple[float, float]:
    """image_dataset_from_directory on the same split, flip and rotation, the recipe's network, Adam."""
    split = pd.read_parquet(paths.processed / "split.parquet")
    for row in split.itertuples():
        target = workspace / row.split / row.label / Path(row.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(paths.raw / row.path, target)
    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    options = dict(image_size=(image_size, image_size), batch_size=32, label_mode="int", seed=seed)
    train_data = keras.utils.image_dataset_from_directory(workspace / "train", shuffle=True, **options)
    val_data = keras.utils.image_dataset_from_directory(workspace / "val", shuffle=False, **options)
    test_data = keras.utils.image_dataset_from_directory(workspace / "test", shuffle=False, **options)
    num_classes = len(train_data.class_names)
    augmentation = keras.Sequential([layers.RandomFlip("horizontal"), layers.RandomRotation(0.1)])
    train_data = train_data.map(lambda images, labels: (augmentation(images, training=True), labels),
                                num_parallel_calls=4).prefetch(4)
    model = recipe_model(image_size, num_classes)
    model.compile(optimizer=keras.optimizers.Adam(3e-4), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(train_data, validation_data=val_data, epochs=epochs, verbose=0)
    accuracy = model.evaluate(test_data, verbose=0, return_dict=True)["accuracy"]
    return float(accuracy), time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    config, _ = load_config(PROJECT_ROOT / "params.yaml")
    parser.add_argument("--image-size", type=int, default=config.preprocess.image_size)
    parser.add_argument("--recipe-epochs", type=int, default=25, help="the recipe's own number of epochs")
    parser.add_argument("--margin", type=float, default=0.03, help="'clearly higher' accuracy, in points")
    arguments = parser.parse_args()
    if not DATASET.is_dir():
        print(f"skipped: {DATASET} not found (the clothing photos are not part of a clone)")
        return 0
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        source = gather_source(scratch_path / "source")
        imgpipe_accuracy, imgpipe_seconds, paths = run_imgpipe(scratch_path / "imgpipe", source, arguments.image_size)
        recipe_accuracy, recipe_seconds = run_recipe(scratch_path / "recipe", paths, arguments.image_size,
                                                     arguments.recipe_epochs, config.base.seed)
        counts = json.loads((paths.processed / "preprocess.json").read_text())["counts"]
    print(f"clothing-dataset-small, {arguments.image_size} px, split {counts}, {os.cpu_count()} CPU cores")
    print(f"  imgpipe defaults : test accuracy {imgpipe_accuracy:.4f}  wall {imgpipe_seconds:7.1f} s "
          "(ingest + preprocess + train + evaluate)")
    print(f"  keras-io recipe  : test accuracy {recipe_accuracy:.4f}  wall {recipe_seconds:7.1f} s "
          f"({arguments.recipe_epochs} epochs, fit + evaluate)")
    better = imgpipe_accuracy >= recipe_accuracy + arguments.margin
    faster = imgpipe_seconds <= recipe_seconds
    print(f"  accuracy {'clearly higher' if better else 'NOT clearly higher'} (+{imgpipe_accuracy - recipe_accuracy:.4f}),"
          f" wall time ratio imgpipe/recipe {imgpipe_seconds / recipe_seconds:.2f}")
    return 0 if better and faster else 1


if __name__ == "__main__":
    sys.exit(main())
