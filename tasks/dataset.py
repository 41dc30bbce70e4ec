"""tf.data builders: read the TFRecord shards in data/processed/, yield uint8 image batches for training, evaluation and prediction."""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from tasks import shards
from tasks.config import AugmentParams

AUTOTUNE = tf.data.AUTOTUNE
# A split is cached in memory after its first pass when its shards are under this size.
CACHE_LIMIT_BYTES = 4 * 2**30


def augmentation_layers(params: AugmentParams, seed: int) -> list[keras.layers.Layer]:
    """The random transformations that params name, in a fixed order, each seeded."""
    layers: list[keras.layers.Layer] = []
    flip = {(True, True): "horizontal_and_vertical", (True, False): "horizontal", (False, True): "vertical"}
    mode = flip.get((params.horizontal_flip, params.vertical_flip))
    if mode:
        layers.append(keras.layers.RandomFlip(mode, seed=seed))
    if params.rotation:
        layers.append(keras.layers.RandomRotation(params.rotation, seed=seed + 1))
    if params.zoom:
        layers.append(keras.layers.RandomZoom(params.zoom, seed=seed + 2))
    if params.translation:
        layers.append(keras.layers.RandomTranslation(params.translation, params.translation, seed=seed + 3))
    if params.contrast:
        layers.append(keras.layers.RandomContrast(params.contrast, value_range=(0, 255), seed=seed + 4))
    if params.brightness:
        layers.append(keras.layers.RandomBrightness(params.brightness, value_range=(0, 255), seed=seed + 5))
    return layers


def _augment_function(params: AugmentParams, seed: int):
    layers = augmentation_layers(params, seed)

    def augment(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        values = tf.cast(images, tf.float32)
        for layer in layers:
            values = layer(values, training=True)
        # back to uint8: the model does its own rescaling, whatever feeds it
        return tf.cast(tf.clip_by_value(tf.round(values), 0, 255), tf.uint8), labels

    return augment if layers else None


def split_dataset(
    processed_dir: Path, split: str, image_size: int, batch_size: int, *, training: bool,
    augment: AugmentParams | None = None, seed: int = 0, with_paths: bool = False,
) -> tf.data.Dataset:
    """Batches of (uint8 images, int labels) from one split; `training` shuffles and augments, else order is kept.

    With `with_paths`, batches are dictionaries holding `image`, `label` and `path` (for reports).
    """
    files = shards.shard_files(processed_dir, split)
    if training:
        dataset = tf.data.Dataset.from_tensor_slices([str(path) for path in files])
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                                     num_parallel_calls=AUTOTUNE, deterministic=True)
    else:
        dataset = tf.data.TFRecordDataset([str(path) for path in files], num_parallel_reads=None)
    if sum(path.stat().st_size for path in files) < CACHE_LIMIT_BYTES:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=False)
    dataset = dataset.map(lambda serialized: shards.parse_batch(serialized, image_size), num_parallel_calls=AUTOTUNE)
    if with_paths:
        return dataset.prefetch(AUTOTUNE)
    dataset = dataset.map(lambda example: (example["image"], example["label"]), num_parallel_calls=AUTOTUNE)
    augment_function = _augment_function(augment, seed) if training and augment is not None else None
    if augment_function is not None:
        # One batch at a time: the layers draw from stateful seed generators, and parallel calls would make the
        # augmentation depend on thread timing instead of the seed. Each call transforms a whole batch.
        dataset = dataset.map(augment_function, num_parallel_calls=1)
    return dataset.prefetch(AUTOTUNE)
