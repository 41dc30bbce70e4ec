"""Accuracy benchmark: imgpipe's default params against the keras-io "image classification from scratch" recipe.

Both train on the clothing photos (../shared/datasets/clothing-dataset-small, 713 JPEGs, 10 classes) with the same
train/val/test split (imgpipe's), the same image size and the same CPU, in one run. Prints test accuracy and wall
time of each and exits non-zero unless imgpipe is clearly more accurate (by --margin) in no more wall time.

    .venv/bin/python benchmarks/accuracy.py [--image-size N] [--recipe-epochs 25]

Small data (--pairs): 2-class subsets of the same photos (e.g. pants,shoes: 190 photos), several seeds each (the
seed draws the split, the shuffling and the initial weights of both). Targets: imgpipe's defaults never return a
model that predicts one class for every test image, and their test macro-F1 beats the recipe's on every split.

    .venv/bin/python benchmarks/accuracy.py --pairs pants,shoes shirt,t-shirt --seeds 1 2 3

Given split (--given-split, issue 14): the photos laid out as a user brings them, `train/` (the 341 photos of the
published validation/ folder) and `test/` (its 372 test/ photos) with class folders inside, so that `ingest.layout:
auto` keeps the given test split and carves the validation split out of train/ by hash. imgpipe's current defaults
against imgpipe's old defaults (preprocess.image_size 32, horizontal_flip off, class_weight none) and against the
keras-io recipe (at the image size the current defaults choose), on the same split, in one run: test accuracy,
macro-F1, wall time and CPU seconds (this process and its children) of each. Targets: the current defaults' macro-F1
at least 0.10 above the old defaults' and above the recipe's, in no more wall time than the recipe.

    .venv/bin/python benchmarks/accuracy.py --given-split
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
import machine  # noqa: E402  (benchmarks/machine.py, beside this script)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from keras import layers  # noqa: E402
from sklearn import metrics as sk_metrics  # noqa: E402

from tasks.config import load_config  # noqa: E402
from tasks.evaluate import stage as evaluate  # noqa: E402
from tasks.ingest import stage as ingest  # noqa: E402
from tasks.paths import Paths  # noqa: E402
from tasks.preprocess import stage as preprocess  # noqa: E402
from tasks.train import stage as train  # noqa: E402

DATASET = machine.PHOTOS


def gather_source(target: Path, classes: list[str] | None = None) -> Path:
    """One folder per class holding the photos of both published splits (imgpipe makes its own split)."""
    for path in DATASET.glob("*/*/*.jpg"):
        published_split, label = path.parent.parent.name, path.parent.name
        if classes is not None and label not in classes:
            continue
        (target / label).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / label / f"{published_split}_{path.name}")
    return target


def run_imgpipe(workspace: Path, source: Path, image_size: int | str, seed: int | None = None,
                extra: dict | None = None) -> tuple[dict, float, Paths]:
    """ingest, preprocess, train and evaluate with params.yaml's defaults (and `extra` overrides); the test metrics,
    wall seconds, paths."""
    overrides = {"ingest.source": str(source), "preprocess.image_size": image_size, **(extra or {})}
    if seed is not None:
        overrides["base.seed"] = seed
    config, _ = load_config(PROJECT_ROOT / "params.yaml", overrides=overrides)
    paths = Paths(config.paths, workspace)
    started = time.perf_counter()
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    train.run(config.train, config.preprocess.augment, config.base.seed, paths)
    metrics = evaluate.run(config.evaluate, config.base.seed, config.ingest.max_pixels, paths)
    return metrics, time.perf_counter() - started, paths


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


def run_recipe(workspace: Path, paths: Paths, image_size: int, epochs: int, seed: int,
               source: Path | None = None) -> tuple[dict, float]:
    """image_dataset_from_directory on the same split, flip and rotation, the recipe's network, Adam. The photos are
    linked from `source` (the folder imgpipe ingested; the source paths.raw stood for before the raw store)."""
    split = pd.read_parquet(paths.processed / "split.parquet")
    for row in split.itertuples():
        target = workspace / row.split / row.label / Path(row.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link((source or paths.raw) / row.path, target)
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
    actual = np.concatenate([labels.numpy() for _, labels in test_data])
    predicted = model.predict(test_data, verbose=0).argmax(axis=1)
    seconds = time.perf_counter() - started
    return {"accuracy": float((actual == predicted).mean()), "macro_f1": macro_f1(actual, predicted, num_classes),
            "predicted_classes": len(set(predicted.tolist()))}, seconds


def macro_f1(actual: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """Averaged over every class, as imgpipe's evaluation does (a class never predicted counts as 0)."""
    return float(sk_metrics.f1_score(actual, predicted, labels=list(range(num_classes)), average="macro",
                                     zero_division=0))


def small_data(pairs: list[str], seeds: list[int], image_size: int, recipe_epochs: int) -> int:
    """2-class subsets, several seeds: imgpipe's defaults against the recipe on the same split."""
    rows, failed = [], False
    for pair in pairs:
        classes = pair.split(",")
        for seed in seeds:
            with tempfile.TemporaryDirectory() as scratch:
                scratch_path = Path(scratch)
                source = gather_source(scratch_path / "source", classes)
                metrics, imgpipe_seconds, paths = run_imgpipe(scratch_path / "imgpipe", source, image_size, seed)
                predictions = pd.read_csv(paths.evaluation / "test_predictions.csv")
                card = json.loads((paths.candidate / "model_card.json").read_text())
                recipe, recipe_seconds = run_recipe(scratch_path / "recipe", paths, image_size, recipe_epochs, seed)
                counts = json.loads((paths.processed / "preprocess.json").read_text())["counts"]
            single_class = predictions["predicted"].nunique() < 2
            beaten = metrics["macro_f1"] > recipe["macro_f1"]
            failed |= single_class or not beaten
            rows.append((pair, seed, counts, metrics, predictions["predicted"].nunique(), card, imgpipe_seconds,
                         recipe, recipe_seconds, beaten))
            print(f"{pair} seed {seed}: split {counts}; imgpipe macro-F1 {metrics['macro_f1']:.3f} (accuracy "
                  f"{metrics['accuracy']:.3f}, {predictions['predicted'].nunique()} classes predicted, batch "
                  f"{card['batch_size']}, kept epoch {card['validation']['epoch']} of {card['epochs_run']}, "
                  f"{imgpipe_seconds:.0f} s); recipe macro-F1 {recipe['macro_f1']:.3f} (accuracy "
                  f"{recipe['accuracy']:.3f}, {recipe['predicted_classes']} classes predicted, {recipe_seconds:.0f} s)"
                  f"{'' if beaten else '  NOT BEATEN'}{'  SINGLE CLASS' if single_class else ''}", flush=True)
    print(f"\nsmall data, {image_size} px, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    print("| pair | seed | train/val/test | imgpipe macro-F1 (accuracy) | classes predicted | "
          "batch, kept epoch / run | recipe macro-F1 (accuracy) | recipe classes predicted | imgpipe / recipe wall |")
    print("|---|---|---|---|---|---|---|---|---|")
    for pair, seed, counts, metrics, predicted, card, seconds, recipe, recipe_seconds, beaten in rows:
        print(f"| {pair} | {seed} | {counts['train']}/{counts['val']}/{counts['test']} | "
              f"{'**' if beaten else ''}{metrics['macro_f1']:.3f}{'**' if beaten else ''} "
              f"({metrics['accuracy']:.3f}) | "
              f"{predicted} | {card['batch_size']}, {card['validation']['epoch']} / {card['epochs_run']} | "
              f"{recipe['macro_f1']:.3f} ({recipe['accuracy']:.3f}) | {recipe['predicted_classes']} | "
              f"{seconds / recipe_seconds:.2f} |")
    wins = sum(row[-1] for row in rows)
    print(f"\nimgpipe beats the recipe on {wins} of {len(rows)} splits; single-class imgpipe models: "
          f"{sum(row[4] < 2 for row in rows)}")
    return 1 if failed else 0


OLD_DEFAULTS = {"preprocess.image_size": 32, "preprocess.augment.horizontal_flip": False, "train.class_weight": "none"}


def given_layout(target: Path) -> Path:
    """train/<class>/ from the published validation/ photos, test/<class>/ from its test/ photos."""
    for published, split in (("validation", "train"), ("test", "test")):
        for path in DATASET.glob(f"{published}/*/*.jpg"):
            (target / split / path.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / split / path.parent.name / path.name)
    return target


def _parse_setting(text: str) -> tuple[str, Any]:
    """"train.patience=10" -> ("train.patience", 10): the value read as YAML, as `dvc exp run -S` reads it."""
    key, _, value = text.partition("=")
    return key.strip(), yaml.safe_load(value)


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (preprocess's decoding workers, export processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def given_split(recipe_epochs: int, variants: list[dict[str, Any]] | None = None) -> int:
    """imgpipe's current defaults, its old defaults and the recipe on a given train/ + test/ layout, in one run."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        source = given_layout(scratch_path / "source")
        splits, sizes = [], []
        runs = [("imgpipe old defaults", OLD_DEFAULTS), ("imgpipe defaults", {})]
        runs += [(f"imgpipe defaults, {', '.join(f'{key}={value}' for key, value in variant.items())}", variant)
                 for variant in variants or []]
        for name, extra in runs:
            cpu = cpu_seconds()
            metrics, seconds, paths = run_imgpipe(scratch_path / name.replace(" ", "_"), source,
                                                  extra.get("preprocess.image_size", "auto"), extra=extra)
            cpu = cpu_seconds() - cpu
            summary = json.loads((paths.processed / "preprocess.json").read_text())
            sizes.append(int(summary["image_size"]))
            card = json.loads((paths.candidate / "model_card.json").read_text())
            splits.append(pd.read_parquet(paths.processed / "split.parquet")[["sha256", "split"]]
                          .sort_values("sha256").reset_index(drop=True))
            rows.append((name, metrics["accuracy"], metrics["macro_f1"], seconds, cpu,
                         f"{summary['image_size']} px, kept epoch {card['validation']['epoch']} of "
                         f"{card['epochs_run']}, split {summary['counts']}"))
            print(rows[-1], flush=True)
        if not splits[0].equals(splits[1]):
            raise RuntimeError("the two imgpipe runs did not get the same split")
        image_size = sizes[1]  # the recipe at the size the current defaults chose
        cpu = cpu_seconds()
        recipe, seconds = run_recipe(scratch_path / "recipe", paths, image_size, recipe_epochs, load_config(
            PROJECT_ROOT / "params.yaml")[0].base.seed, source)
        rows.append(("keras-io recipe", recipe["accuracy"], recipe["macro_f1"], seconds, cpu_seconds() - cpu,
                     f"{image_size} px, {recipe_epochs} epochs"))
        print(rows[-1], flush=True)
    print(f"\ngiven split (train/ = published validation/, test/ = published test/), {os.cpu_count()} CPU cores "
          f"({machine.cpu_model()}), load average {os.getloadavg()[0]:.1f}")
    print("| run | test accuracy | test macro-F1 | wall s | CPU s | notes |\n|---|---|---|---|---|---|")
    for name, accuracy, f1, seconds, cpu, notes in rows:
        print(f"| {name} | {accuracy:.3f} | {f1:.3f} | {seconds:.0f} | {cpu:.0f} | {notes} |")
    (_, _, old_f1, _, _, _), (_, _, new_f1, new_wall, new_cpu, _), (_, _, recipe_f1, recipe_wall, recipe_cpu, _) = rows
    met = new_f1 >= old_f1 + 0.10 and new_f1 > recipe_f1 and new_wall <= recipe_wall
    print(f"\nmacro-F1 defaults - old defaults {new_f1 - old_f1:+.3f} (target >= +0.10), defaults - recipe "
          f"{new_f1 - recipe_f1:+.3f} (target > 0); wall defaults / recipe {new_wall / recipe_wall:.2f}, CPU "
          f"{new_cpu / recipe_cpu:.2f} (target <= 1): target {'met' if met else 'MISSED'}")
    return 0 if met else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    config, _ = load_config(PROJECT_ROOT / "params.yaml")
    parser.add_argument("--image-size", type=lambda value: value if value == "auto" else int(value),
                        default=config.preprocess.image_size)
    parser.add_argument("--recipe-epochs", type=int, default=25, help="the recipe's own number of epochs")
    parser.add_argument("--margin", type=float, default=0.03, help="'clearly higher' accuracy, in points")
    parser.add_argument("--pairs", nargs="*", metavar="CLASS,CLASS",
                        help="small data instead: 2-class subsets, e.g. pants,shoes shirt,t-shirt")
    parser.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3], help="with --pairs: the seeds to run")
    parser.add_argument("--given-split", action="store_true",
                        help="train/ + test/ layout: current defaults vs old defaults vs the recipe (issue 14)")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="with --given-split: one more imgpipe run with these params changed (repeatable)")
    arguments = parser.parse_args()
    if not DATASET.is_dir():
        print(f"skipped: {DATASET} not found (the clothing photos are not part of a clone)")
        return 0
    logging.basicConfig(level=logging.WARNING)
    if arguments.given_split:
        variants = [dict(_parse_setting(item) for item in variant.split(",")) for variant in arguments.variant]
        return given_split(arguments.recipe_epochs, variants)
    if arguments.pairs:
        return small_data(arguments.pairs, arguments.seeds, arguments.image_size, arguments.recipe_epochs)
    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        source = gather_source(scratch_path / "source")
        imgpipe_metrics, imgpipe_seconds, paths = run_imgpipe(scratch_path / "imgpipe", source, arguments.image_size)
        recipe_metrics, recipe_seconds = run_recipe(scratch_path / "recipe", paths, arguments.image_size,
                                                    arguments.recipe_epochs, config.base.seed)
        imgpipe_accuracy, recipe_accuracy = imgpipe_metrics["accuracy"], recipe_metrics["accuracy"]
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
