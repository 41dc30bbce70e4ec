"""tf.data builders: read the decoded shards and split table in data/processed/, yield uint8 image batches for
training and evaluation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import tensorflow as tf

from tasks import processed_store
from tasks.params import AugmentParams
from tasks.train import augment as augmentation

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BUFFER = 10_000  # images: 30 MB at 32 px and 500 MB at 128 px at most
PARSE_BATCH = 256  # records parsed (and sorted into this split or not) per call
# A split is cached in memory after its first pass when its shards take under this share of the machine's memory.
CACHE_MEMORY_SHARE = 0.25


def fits_in_memory(size_bytes: int) -> bool:
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: assume a small machine
        memory = 8 * 2**30
    return size_bytes < memory * CACHE_MEMORY_SHARE


def num_classes(processed_dir: Path) -> int:
    return len(json.loads((processed_dir / processed_store.LABELS_FILE).read_text(encoding="utf-8")))


def split_rows(processed_dir: Path, split: str) -> pd.DataFrame:
    """The split table's rows of one split, in the order they are stored."""
    table = processed_store.read_table(processed_dir)
    rows = table[table["split"] == split].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"{processed_dir}: no {split} images; run the preprocess stage (with more images or other "
                         "preprocess.val_fraction / test_fraction)")
    return rows


def _records(processed_dir: Path, rows: pd.DataFrame, image_size: int, training: bool, seed: int) -> tf.data.Dataset:
    """One element per image of `rows` ({"image", "row"}: its pixels and its position in rows), read from the shards
    that hold them; the records of other splits (and of removed images) are dropped."""
    files = [str(processed_dir / shard) for shard in sorted(rows["shard"].unique())]
    positions = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(rows["sha256"].tolist()),
                                            tf.range(len(rows), dtype=tf.int64)), default_value=-1)
    if training:
        dataset = tf.data.Dataset.from_tensor_slices(files)
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                                     num_parallel_calls=AUTOTUNE, deterministic=True)
    else:
        dataset = tf.data.TFRecordDataset(files, num_parallel_reads=None)

    def keep_this_split(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = processed_store.parse_batch(serialized, image_size)
        position = positions.lookup(parsed["sha256"])
        wanted = position >= 0
        return {"image": tf.boolean_mask(parsed["image"], wanted), "row": tf.boolean_mask(position, wanted)}

    dataset = dataset.batch(PARSE_BATCH).map(keep_this_split, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.unbatch()


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
    rows = split_rows(processed_dir, split)
    labels = tf.constant(rows["label_index"].to_numpy(), dtype=tf.int32)
    paths = tf.constant(rows["path"].tolist())
    dataset = _records(processed_dir, rows, image_size, training, seed)
    if fits_in_memory(len(rows) * (image_size * image_size * 3 + 64)):
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=False)
    dataset = dataset.map(lambda example: {"image": example["image"], "label": tf.gather(labels, example["row"]),
                                           "path": tf.gather(paths, example["row"])},
                          num_parallel_calls=AUTOTUNE)

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
