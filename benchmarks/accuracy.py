"""Accuracy benchmark: imgpipe's defaults (issue 22: a head on EfficientNet-Lite2's ImageNet features, fine-tuned
where it pays) on the clothing photos (../shared/datasets/clothing-dataset-small, 713 JPEGs, 10 classes), against the
previous defaults (simple_cnn trained from scratch) and, with --recipe, the keras-io "image classification from
scratch" recipe, on the same split and CPU in one run. Test accuracy, macro-F1, wall and CPU seconds (this process and
its finished children) of each; exits 1 when a target is missed. The pretrained weights are converted into imgpipe's
cache once per machine: the first run pays a few seconds more.

The 713 photos' own split (imgpipe splits them). Target: test accuracy >= 0.88 with the defaults.

    .venv/bin/python benchmarks/accuracy.py [--recipe]

Small data (--pairs): 2-class subsets of the same photos (e.g. pants,shoes: 190 photos), several seeds each (the
seed draws the split). Target: test macro-F1 >= 0.90 on every split, and never one class predicted for everything.

    .venv/bin/python benchmarks/accuracy.py --pairs pants,shoes shirt,t-shirt --seeds 1 2 3

Given split (--given-split): the photos laid out as a user brings them, `train/` (the 341 photos of the published
validation/ folder) and `test/` (its 372 test/ photos) with class folders inside, so that `ingest.layout: auto` keeps
the given test split and carves the validation split out of train/ by hash (284 / 57 / 372). Targets: the defaults'
test macro-F1 >= 0.80, in no more CPU seconds than the previous defaults' run.

    .venv/bin/python benchmarks/accuracy.py --given-split [--variant KEY=VALUE,...]
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
from tasks.embed import stage as embed  # noqa: E402
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
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths, config.train.model,
                   config.train.weights)
    embed.run(config.embed, config.ingest.max_pixels, paths)
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


def small_data(pairs: list[str], seeds: list[int], image_size: int | str, recipe_epochs: int,
               with_recipe: bool) -> int:
    """2-class subsets, several seeds: imgpipe's defaults (and the recipe) on the same split."""
    rows, failed = [], False
    for pair in pairs:
        classes = pair.split(",")
        for seed in seeds:
            with tempfile.TemporaryDirectory() as scratch:
                scratch_path = Path(scratch)
                source = gather_source(scratch_path / "source", classes)
                cpu = cpu_seconds()
                metrics, imgpipe_seconds, paths = run_imgpipe(scratch_path / "imgpipe", source, image_size, seed)
                cpu = cpu_seconds() - cpu
                predictions = pd.read_csv(paths.evaluation / "test_predictions.csv")
                notes = _describe(paths)
                recipe = None
                if with_recipe:
                    recipe, _ = run_recipe(scratch_path / "recipe", paths,
                                           int(json.loads((paths.processed / "preprocess.json").read_text())
                                               ["image_size"]), recipe_epochs, seed, source)
            single_class = predictions["predicted"].nunique() < 2
            met = metrics["macro_f1"] >= 0.90 and not single_class
            failed |= not met
            rows.append((pair, seed, metrics, imgpipe_seconds, cpu, notes, recipe, met))
            print(rows[-1], flush=True)
    print(f"\nsmall data, {os.cpu_count()} CPU cores ({machine.cpu_model()}), load average {os.getloadavg()[0]:.1f}")
    print("| pair | seed | imgpipe test macro-F1 (accuracy) | wall s | CPU s | notes |"
          + (" recipe macro-F1 (accuracy) |" if with_recipe else "") + "\n|---|---|---|---|---|---|"
          + ("---|" if with_recipe else ""))
    for pair, seed, metrics, seconds, cpu, notes, recipe, met in rows:
        recipe_cell = f" {recipe['macro_f1']:.3f} ({recipe['accuracy']:.3f}) |" if recipe else ""
        print(f"| {pair} | {seed} | {'**' if met else ''}{metrics['macro_f1']:.3f}{'**' if met else ''} "
              f"({metrics['accuracy']:.3f}) | {seconds:.0f} | {cpu:.0f} | {notes} |{recipe_cell}")
    print(f"\nmacro-F1 >= 0.90 on {sum(row[-1] for row in rows)} of {len(rows)} splits: target "
          f"{'met' if not failed else 'MISSED'}")
    return 1 if failed else 0


# the defaults before issue 22: simple_cnn from scratch at the automatic size (64 px for photos), stretched
PREVIOUS_DEFAULTS = {"train.model": "simple_cnn", "preprocess.resize": "stretch"}


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


def _describe(paths: Paths) -> str:
    summary = json.loads((paths.processed / "preprocess.json").read_text())
    card = json.loads((paths.candidate / "model_card.json").read_text())
    kept = ("head" if card["validation"]["phase"] == "head"
            else f"{card['validation']['phase']} epoch {card['validation']['epoch']} of {card['epochs_run']}")
    tuned = card.get("fine_tune") or {}
    fine_tune = f", fine-tuning {'kept' if tuned.get('kept') else 'tried, head kept' if tuned.get('tried') else 'off'}"
    return (f"{card['model']} {summary['image_size']} px {summary['resize']}, kept {kept}"
            f"{fine_tune if tuned else ''}, split {summary['counts']}")


def given_split(recipe_epochs: int, with_recipe: bool, variants: list[dict[str, Any]] | None = None) -> int:
    """imgpipe's defaults, its previous defaults (and the recipe) on a given train/ + test/ layout, in one run."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        source = given_layout(scratch_path / "source")
        splits, sizes = [], []
        runs = [("imgpipe previous defaults (simple_cnn)", PREVIOUS_DEFAULTS), ("imgpipe defaults", {})]
        runs += [(f"imgpipe defaults, {', '.join(f'{key}={value}' for key, value in variant.items())}", variant)
                 for variant in variants or []]
        for name, extra in runs:
            cpu = cpu_seconds()
            metrics, seconds, paths = run_imgpipe(scratch_path / name.replace(" ", "_"), source,
                                                  extra.get("preprocess.image_size", "auto"), extra=extra)
            cpu = cpu_seconds() - cpu
            sizes.append(int(json.loads((paths.processed / "preprocess.json").read_text())["image_size"]))
            splits.append(pd.read_parquet(paths.processed / "split.parquet")[["sha256", "split"]]
                          .sort_values("sha256").reset_index(drop=True))
            rows.append((name, metrics["accuracy"], metrics["macro_f1"], seconds, cpu, _describe(paths)))
            print(rows[-1], flush=True)
        if not splits[0].equals(splits[1]):
            raise RuntimeError("the two imgpipe runs did not get the same split")
        if with_recipe:
            cpu = cpu_seconds()
            recipe, seconds = run_recipe(scratch_path / "recipe", paths, sizes[0], recipe_epochs, load_config(
                PROJECT_ROOT / "params.yaml")[0].base.seed, source)
            rows.append(("keras-io recipe", recipe["accuracy"], recipe["macro_f1"], seconds, cpu_seconds() - cpu,
                         f"{sizes[0]} px, {recipe_epochs} epochs"))
            print(rows[-1], flush=True)
    print(f"\ngiven split (train/ = published validation/, test/ = published test/), {os.cpu_count()} CPU cores "
          f"({machine.cpu_model()}), load average {os.getloadavg()[0]:.1f}")
    print("| run | test accuracy | test macro-F1 | wall s | CPU s | notes |\n|---|---|---|---|---|---|")
    for name, accuracy, f1, seconds, cpu, notes in rows:
        print(f"| {name} | {accuracy:.3f} | {f1:.3f} | {seconds:.0f} | {cpu:.0f} | {notes} |")
    (_, _, _, _, previous_cpu, _), (_, _, new_f1, _, new_cpu, _) = rows[:2]
    met = new_f1 >= 0.80 and new_cpu <= previous_cpu
    print(f"\ndefaults: test macro-F1 {new_f1:.3f} (target >= 0.80), CPU {new_cpu:.0f} s against the previous "
          f"defaults' {previous_cpu:.0f} s ({new_cpu / previous_cpu:.2f}x, target <= 1): target "
          f"{'met' if met else 'MISSED'}")
    return 0 if met else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    config, _ = load_config(PROJECT_ROOT / "params.yaml")
    parser.add_argument("--image-size", type=lambda value: value if value == "auto" else int(value),
                        default=config.preprocess.image_size)
    parser.add_argument("--recipe-epochs", type=int, default=25, help="the recipe's own number of epochs")
    parser.add_argument("--recipe", action="store_true", help="also train the keras-io recipe on the same split")
    parser.add_argument("--pairs", nargs="*", metavar="CLASS,CLASS",
                        help="small data instead: 2-class subsets, e.g. pants,shoes shirt,t-shirt")
    parser.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3], help="with --pairs: the seeds to run")
    parser.add_argument("--given-split", action="store_true",
                        help="train/ + test/ layout: the defaults against the previous defaults (simple_cnn)")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="with --given-split: one more imgpipe run with these params changed (repeatable)")
    arguments = parser.parse_args()
    if not DATASET.is_dir():
        print(f"skipped: {DATASET} not found (the clothing photos are not part of a clone)")
        return 0
    logging.basicConfig(level=logging.WARNING)
    if arguments.given_split:
        variants = [dict(_parse_setting(item) for item in variant.split(",")) for variant in arguments.variant]
        return given_split(arguments.recipe_epochs, arguments.recipe, variants)
    if arguments.pairs:
        return small_data(arguments.pairs, arguments.seeds, arguments.image_size, arguments.recipe_epochs,
                          arguments.recipe)
    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        source = gather_source(scratch_path / "source")
        cpu = cpu_seconds()
        metrics, seconds, paths = run_imgpipe(scratch_path / "imgpipe", source, arguments.image_size)
        cpu = cpu_seconds() - cpu
        notes = _describe(paths)
        recipe = None
        if arguments.recipe:
            size = int(json.loads((paths.processed / "preprocess.json").read_text())["image_size"])
            recipe, recipe_seconds = run_recipe(scratch_path / "recipe", paths, size, arguments.recipe_epochs,
                                                config.base.seed, source)
    print(f"clothing-dataset-small, its own split, {os.cpu_count()} CPU cores ({machine.cpu_model()}), load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"  imgpipe defaults : test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, wall "
          f"{seconds:.0f} s, CPU {cpu:.0f} s ({notes})")
    if recipe:
        print(f"  keras-io recipe  : test accuracy {recipe['accuracy']:.4f}, macro-F1 {recipe['macro_f1']:.4f}, wall "
              f"{recipe_seconds:.0f} s ({arguments.recipe_epochs} epochs)")
    met = metrics["accuracy"] >= 0.88
    print(f"  test accuracy {metrics['accuracy']:.4f} (target >= 0.88): target {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
