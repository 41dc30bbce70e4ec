"""Input pipeline benchmark: images per second of ways to feed training, on the same files at the same image size.

  (a) a plain Pillow loop: open, convert to RGB, resize (one process; the naive baseline)
  (b) keras.utils.image_dataset_from_directory: decodes and resizes every JPEG on every epoch (batch 64);
      for reference also with params' augmentation as Keras layers (RandomRotation, ...) mapped over it
  (c) imgpipe's training input: tf.data from TFRecord shards of decoded uint8 images, shuffled, cached, with the
      augmentation of params.yaml (`training_batches.split_dataset(..., training=True, augment=...)`)
  (d) the training step rate of the default model (train section defaults) on this machine, from memory

Targets: (c) >= 5x (b) and (c) >= 3x (d), so the input never limits training; exits 1 when one is missed.
(c) is reported for its first epoch (reads the shards, fills the cache, compiles the augmentation) and for the
epochs after it; the targets are checked on the later epochs, where a training run spends nearly all its time.
The epochs of (b) and the (c) variants take turns, so that a busy shared machine weighs on all of them alike.

    .venv/bin/python benchmarks/input_pipeline.py [--photos DIR] [--sizes 128 32] [--epochs 8]

Photos: DIR holds <anything>/<class>/*.jpg (default: the shared clothing photos, 713 JPEGs of about 400x530);
without them, 713 generated 400x530 JPEGs in 10 classes are used and the output says so.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
import machine  # noqa: E402  (benchmarks/machine.py, beside this script)

from tasks import images, pool  # noqa: E402  (light: the decoding processes re-import this file)
from tasks.config import load_config  # noqa: E402

DEFAULT_PHOTOS = machine.PHOTOS
TARGET_OVER_KERAS = 5.0
TARGET_OVER_TRAINING = 3.0
BATCH_SIZE = 64


def find_photos(photos: Path) -> list[Path]:
    return sorted(path for path in photos.glob("*/*/*") if path.suffix.lower() in (".jpg", ".jpeg"))


def generate_photos(folder: Path, count: int = 713, classes: int = 10) -> list[Path]:
    """Smooth random colour fields with noise, saved as JPEGs of a typical photo size."""
    generator = np.random.default_rng(0)
    files = []
    for index in range(count):
        corners = generator.integers(0, 256, (2, 2, 3)).astype(np.uint8)
        field = np.asarray(Image.fromarray(corners, "RGB").resize((400, 530), Image.Resampling.BILINEAR), np.int16)
        pixels = np.clip(field + generator.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        path = folder / "generated" / f"class{index % classes}" / f"{index:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "RGB").save(path, quality=90)
        files.append(path)
    return files


def class_view(files: list[Path], folder: Path) -> Path:
    """One folder per class holding links to the files, as image_dataset_from_directory wants them."""
    for path in files:
        link = folder / path.parent.name / f"{path.parent.parent.name}_{path.name}"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path.resolve())
    return folder


def cpu_seconds() -> float:
    """CPU time of this process, all threads: on a shared machine it says what wall-clock rates cannot."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def interleaved_epochs(datasets: dict[str, Any], epochs: int) -> dict[str, tuple[float, float, float]]:
    """Per dataset: images per second of its first epoch and of its later ones, and CPU microseconds per image
    of the later ones. Epochs of the datasets take turns, so that each sees the same share of a busy machine."""
    first: dict[str, float] = {}
    totals = {name: [0, 0.0, 0.0] for name in datasets}  # images, seconds, CPU seconds after the first epoch
    for epoch in range(epochs):
        for name, data in datasets.items():
            started, cpu_started, images = time.perf_counter(), cpu_seconds(), 0
            for batch in data:
                images += int(batch[0].shape[0])
            elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
            if epoch == 0:
                first[name] = images / elapsed
            else:
                totals[name] = [totals[name][0] + images, totals[name][1] + elapsed, totals[name][2] + cpu]
    return {name: (first[name], images / seconds, cpu / images * 1e6)
            for name, (images, seconds, cpu) in totals.items()}


def pillow_loop(files: list[Path], image_size: int) -> tuple[float, float, float]:
    started, cpu_started = time.perf_counter(), cpu_seconds()
    for path in files:
        with Image.open(path) as image:
            np.asarray(image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR))
    rate = len(files) / (time.perf_counter() - started)
    return rate, rate, (cpu_seconds() - cpu_started) / len(files) * 1e6


def keras_from_directory(folder: Path, image_size: int, seed: int) -> Any:
    import keras

    return keras.utils.image_dataset_from_directory(folder, image_size=(image_size, image_size),
                                                    batch_size=BATCH_SIZE, shuffle=True, seed=seed, verbose=False)


def keras_layers_for(augment: Any) -> Any:
    """The Keras preprocessing layers that match params' augmentation (for a like-for-like reference row)."""
    import keras

    layers = []
    if augment.horizontal_flip or augment.vertical_flip:
        mode = "horizontal_and_vertical" if augment.horizontal_flip and augment.vertical_flip else (
            "horizontal" if augment.horizontal_flip else "vertical")
        layers.append(keras.layers.RandomFlip(mode))
    if augment.rotation:
        layers.append(keras.layers.RandomRotation(augment.rotation))
    if augment.zoom:
        layers.append(keras.layers.RandomZoom(augment.zoom))
    if augment.translation:
        layers.append(keras.layers.RandomTranslation(augment.translation, augment.translation))
    if augment.contrast:
        layers.append(keras.layers.RandomContrast(augment.contrast, value_range=(0, 255)))
    if augment.brightness:
        layers.append(keras.layers.RandomBrightness(augment.brightness, value_range=(0, 255)))
    return keras.Sequential(layers)


def keras_augmented(folder: Path, image_size: int, seed: int, augment: Any) -> Any:
    import tensorflow as tf

    layers = keras_layers_for(augment)
    return keras_from_directory(folder, image_size, seed).map(
        lambda images, labels: (layers(images, training=True), labels), num_parallel_calls=tf.data.AUTOTUNE)


def write_shards(files: list[Path], image_size: int, folder: Path, max_pixels: int) -> tuple[float, float, float]:
    """Decode once, as the preprocess stage does (all cores), into one train split: images per second.

    CPU time is not shown: the decoding happens in worker processes."""
    import hashlib

    import pandas as pd

    from tasks import processed_store

    labels = sorted({path.parent.name for path in files})
    started = time.perf_counter()
    decode = functools.partial(images.load_rgb_array, image_size=image_size, resize_mode="stretch",
                               max_pixels=max_pixels)
    keys = [hashlib.sha256(str(path).encode()).hexdigest() for path in files]
    with processed_store.ShardWriter(folder, 128 * 2**20) as writer:
        shards = [writer.add(key, pixels) for key, pixels in zip(keys, pool.ordered_map(decode, files))]
    table = pd.DataFrame({"path": [str(path) for path in files], "label": [path.parent.name for path in files],
                          "label_index": [labels.index(path.parent.name) for path in files], "split": "train",
                          "sha256": keys, "shard": shards})
    table.to_parquet(folder / processed_store.SPLIT_TABLE)
    (folder / processed_store.LABELS_FILE).write_text(json.dumps(labels))
    rate = len(files) / (time.perf_counter() - started)
    return rate, rate, float("nan")


def imgpipe_input(folder: Path, image_size: int, augment: Any, seed: int) -> Any:
    from tasks import training_batches

    return training_batches.split_dataset(folder, "train", image_size, BATCH_SIZE, training=True, augment=augment,
                                          seed=seed)


def training_steps(image_size: int, num_classes: int, min_seconds: float = 8.0) -> tuple[float, float, float]:
    """Images per second of train_on_batch for the default model, compiled as the train stage compiles it."""
    import keras

    from tasks.params import TrainParams
    from tasks import accelerator, networks

    params = TrainParams()
    plan = accelerator.plan(params.precision, params.jit_compile)
    network = networks.build(params, image_size, num_classes)
    network.compile(optimizer=keras.optimizers.Adam(params.learning_rate), loss="sparse_categorical_crossentropy",
                    metrics=["accuracy"], jit_compile=plan.jit_compile)
    generator = np.random.default_rng(0)
    batches = [(generator.integers(0, 256, (BATCH_SIZE, image_size, image_size, 3), dtype=np.uint8),
                generator.integers(0, num_classes, BATCH_SIZE)) for _ in range(4)]
    for pixels, labels in batches[:2]:  # warm-up: tracing and first allocations
        network.train_on_batch(pixels, labels)
    steps, started, cpu_started = 0, time.perf_counter(), cpu_seconds()
    while steps < 5 or time.perf_counter() - started < min_seconds:
        network.train_on_batch(*batches[steps % len(batches)])
        steps += 1
    rate = steps * BATCH_SIZE / (time.perf_counter() - started)
    return rate, rate, (cpu_seconds() - cpu_started) / (steps * BATCH_SIZE) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="default: 128 and params.yaml's image_size")
    parser.add_argument("--epochs", type=int, default=8)
    arguments = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from tasks.params import AugmentParams

    config, _ = load_config(PROJECT_ROOT / "params.yaml")
    configured = config.preprocess.image_size if isinstance(config.preprocess.image_size, int) else 64
    sizes = arguments.sizes or sorted({128, configured}, reverse=True)
    augment = config.preprocess.augment
    every_transformation = AugmentParams(horizontal_flip=True, rotation=0.05, zoom=0.1, translation=0.1,
                                         contrast=0.1, brightness=0.1)
    missed = []
    with tempfile.TemporaryDirectory(prefix="imgpipe-benchmark-") as scratch:
        scratch_dir = Path(scratch)
        files = find_photos(arguments.photos)
        source = f"{len(files)} JPEG photos under {arguments.photos}"
        if not files:
            files = generate_photos(scratch_dir / "photos")
            source = f"{len(files)} generated 400x530 JPEGs ({arguments.photos} has no photos)"
        for path in files:  # from the page cache for every contender
            path.read_bytes()
        view = class_view(files, scratch_dir / "by_class")
        num_classes = len({path.parent.name for path in files})
        print(f"{source}, {num_classes} classes; {os.cpu_count()} cores ({machine.cpu_model()}); TensorFlow {tf.__version__};"
              f" batch {BATCH_SIZE}, {arguments.epochs} epochs; augmentation from params.yaml: "
              f"{augment.model_dump(exclude_defaults=True)}")
        for image_size in sizes:
            shard_dir = scratch_dir / f"shards_{image_size}"
            shard_dir.mkdir()
            pillow = pillow_loop(files, image_size)
            preprocess_once = write_shards(files, image_size, shard_dir, config.ingest.max_pixels)
            inputs = interleaved_epochs({
                "(b) keras image_dataset_from_directory": keras_from_directory(view, image_size, config.base.seed),
                "    the same + params' augmentation as Keras layers": keras_augmented(
                    view, image_size, config.base.seed, augment),
                "(c) imgpipe shards, augmentation of params.yaml": imgpipe_input(shard_dir, image_size, augment,
                                                                                 config.base.seed),
                "    imgpipe shards, no augmentation": imgpipe_input(shard_dir, image_size, None, config.base.seed),
                "    imgpipe shards, all six transformations": imgpipe_input(shard_dir, image_size,
                                                                             every_transformation, config.base.seed),
            }, arguments.epochs)
            rows = {"(a) Pillow loop: open, RGB, resize (1 process)": pillow,
                    "preprocess once: decode to shards (all cores)": preprocess_once,
                    **inputs,
                    "(d) training steps, default model": training_steps(image_size, num_classes)}
            print(f"\nimage size {image_size} px")
            print(f"| {'input':<54} | {'images/s, first epoch':>21} | {'images/s, later':>15} | {'CPU us/image':>12} |")
            print(f"|{'-' * 56}|{'-' * 22}:|{'-' * 16}:|{'-' * 13}:|")
            for name, (first_rate, later_rate, cpu_per_image) in rows.items():
                print(f"| {name:<54} | {first_rate:>21,.0f} | {later_rate:>15,.0f} | {cpu_per_image:>12,.0f} |")
            later = rows["(c) imgpipe shards, augmentation of params.yaml"][1]
            over_keras = later / rows["(b) keras image_dataset_from_directory"][1]
            over_training = later / rows["(d) training steps, default model"][1]
            cpu_over_keras = (rows["(b) keras image_dataset_from_directory"][2]
                              / rows["(c) imgpipe shards, augmentation of params.yaml"][2])
            print(f"(c)/(b) = {over_keras:.1f}x (target {TARGET_OVER_KERAS:g}x; {cpu_over_keras:.1f}x in CPU time per "
                  f"image); (c)/(d) = {over_training:.1f}x (target {TARGET_OVER_TRAINING:g}x)")
            if over_keras < TARGET_OVER_KERAS:
                missed.append(f"{image_size} px: (c)/(b) {over_keras:.1f}x < {TARGET_OVER_KERAS:g}x")
            if over_training < TARGET_OVER_TRAINING:
                missed.append(f"{image_size} px: (c)/(d) {over_training:.1f}x < {TARGET_OVER_TRAINING:g}x")
    if missed:
        print("\nMISSED: " + "; ".join(missed))
        return 1
    print("\nall targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
