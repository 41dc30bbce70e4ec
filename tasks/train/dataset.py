"""tf.data builders: read the TFRecord shards in data/processed/, yield uint8 image batches for training, evaluation and prediction."""

from __future__ import annotations

import json
import os
from pathlib import Path

import tensorflow as tf

from tasks import shards
from tasks.params import AugmentParams
from tasks.train import augment as augmentation

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BUFFER = 10_000  # examples; serialized uint8 images, so 30 MB at 32 px and 500 MB at 128 px at most
# A split is cached in memory after its first pass when its shards take under this share of the machine's memory.
CACHE_MEMORY_SHARE = 0.25


def fits_in_memory(size_bytes: int) -> bool:
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: assume a small machine
        memory = 8 * 2**30
    return size_bytes < memory * CACHE_MEMORY_SHARE


def num_classes(processed_dir: Path) -> int:
    return len(json.loads((processed_dir / "labels.json").read_text(encoding="utf-8")))


def split_dataset(
    processed_dir: Path, split: str, image_size: int, batch_size: int, *, training: bool,
    augment: AugmentParams | None = None, seed: int = 0, with_paths: bool = False, one_hot: bool = False,
) -> tf.data.Dataset:
    """Batches of (uint8 images, labels) from one split; `training` shuffles and augments, else order is kept.

    Labels are int32 class indices, or float32 one-hot rows with `one_hot` and always when `augment` mixes
    images (mixup, cutmix), since mixed labels are soft. Shuffling and augmentation follow from `seed` (and
    TensorFlow's global seed, which the train stage sets), the epoch and the batch's position, so a run is
    reproducible and each epoch draws afresh. With `with_paths`, batches are dictionaries holding `image`,
    `label` and `path` (for reports).
    """
    files = shards.shard_files(processed_dir, split)
    if training:
        dataset = tf.data.Dataset.from_tensor_slices([str(path) for path in files])
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                                     num_parallel_calls=AUTOTUNE, deterministic=True)
    else:
        dataset = tf.data.TFRecordDataset([str(path) for path in files], num_parallel_reads=None)
    if fits_in_memory(sum(path.stat().st_size for path in files)):
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=False)
    dataset = dataset.map(lambda serialized: shards.parse_batch(serialized, image_size), num_parallel_calls=AUTOTUNE)

    mixing = training and augment is not None and augment.mixing
    if training and augment is not None and augmentation.is_active(augment):
        classes = num_classes(processed_dir) if mixing else 0
        augment_batch = augmentation.augmenter(augment, classes)

        def apply(example: dict[str, tf.Tensor], batch_seed: tf.Tensor) -> dict[str, tf.Tensor]:
            images, labels = augment_batch(example["image"], example["label"], batch_seed)
            return {**example, "image": images, "label": labels}

        # One seed per batch, from a stream that is fixed by `seed` and drawn afresh on every pass (epoch):
        # the map may then run in parallel and still give the same batches in every run.
        batch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, batch_seeds)
        dataset = dataset.map(apply, num_parallel_calls=AUTOTUNE, deterministic=True)
    if one_hot and not mixing:
        classes = num_classes(processed_dir)
        dataset = dataset.map(lambda example: {**example, "label": tf.one_hot(example["label"], classes)},
                              num_parallel_calls=AUTOTUNE)
    if not with_paths:
        dataset = dataset.map(lambda example: (example["image"], example["label"]), num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)
