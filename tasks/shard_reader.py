"""The shard reader: reads the split table and the decoded shards in data/processed/ (or the raw store when
preprocess kept no pixels), yields uint8 images with their labels as tf.data; writes nothing.

Evaluation reads a split in stored order with `split_batches`; training adds its shuffling, balancing and
augmentation around the same pieces (tasks/training_batches.py), so both see the same pixels.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import tensorflow as tf

from tasks import label_sets, pool, processed_store, stored_images

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


def vocabulary(processed_dir: Path) -> list[str]:
    """The labels of the processed store (labels.json), in class index order."""
    return processed_store.read_labels(processed_dir)


def num_classes(processed_dir: Path) -> int:
    return len(vocabulary(processed_dir))


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


def _records_from_raw(processed_dir: Path, rows: pd.DataFrame, image_size: int) -> tf.data.Dataset:
    """The same elements as _records, decoded from the raw store (over all cores) when preprocess kept no pixels (a
    head on a pretrained backbone's features: only fine-tuning and checks need pixels, at the backbone's size)."""
    summary = processed_store.read_summary(processed_dir)
    manifest = (processed_dir / summary["manifest"]).resolve()
    decoder = stored_images.Decoder((processed_dir / summary["raw_store"]).resolve(), image_size, summary["resize"],
                                    int(summary["max_pixels"]))
    jobs = stored_images.jobs_for(manifest, rows["path"].tolist())

    def generate():
        for position, pixels in enumerate(pool.ordered_map(decoder, jobs)):
            yield {"image": pixels, "row": position}

    signature = {"image": tf.TensorSpec((image_size, image_size, 3), tf.uint8), "row": tf.TensorSpec((), tf.int64)}
    return tf.data.Dataset.from_generator(generate, output_signature=signature)


def has_pixels(processed_dir: Path) -> bool:
    """Whether preprocess kept decoded pixels (else images are decoded from the raw store when read)."""
    if not processed_store.summary_file(processed_dir).is_file():  # shards and a split table alone (by hand, or older)
        return True
    return bool(processed_store.read_summary(processed_dir).get("pixels", True))


def _multi_hot_lookup(cells: tf.Tensor, labels: list[str]) -> Callable[[tf.Tensor], tf.Tensor]:
    """A function of row positions -> their float32 multi-hot rows, built in tf.data from the label cells ("a;b")."""
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(labels), tf.range(len(labels), dtype=tf.int64)),
        default_value=-1)

    def multi_hot(row: tf.Tensor) -> tf.Tensor:
        parts = tf.strings.split(tf.gather(cells, row), label_sets.SEPARATOR)
        hot = tf.ragged.map_flat_values(lambda ids: tf.one_hot(ids, len(labels)), table.lookup(parts))
        return tf.minimum(tf.reduce_sum(hot, axis=1), 1.0)

    return multi_hot


def check_single_label(processed_dir: Path, split: str, rows: pd.DataFrame, multi_label: bool) -> None:
    if not multi_label and (rows["label_index"] < 0).any():
        raise ValueError(f"{processed_dir}: some {split} images have several labels; read them with multi_label")


def examples(processed_dir: Path, rows: pd.DataFrame, image_size: int, *, training: bool,
             seed: int) -> tf.data.Dataset:
    """One element per image of `rows` ({"image", "row"}), cached in memory when it fits; `training` reads the
    shards interleaved and shuffles, else the stored order is kept."""
    if has_pixels(processed_dir):
        dataset = _records(processed_dir, rows, image_size, training, seed)
    else:
        dataset = _records_from_raw(processed_dir, rows, image_size)
    if fits_in_memory(len(rows) * (image_size * image_size * 3 + 64)):
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    return dataset


def labelled_batches(elements: tf.data.Dataset, rows: pd.DataFrame, labels: list[str], batch_size: int, *,
                     multi_label: bool, weights: tf.Tensor | None = None) -> tf.data.Dataset:
    """Batches of `elements` as {"image", "label", "path"} (and "weight" with `weights`, one per row): int32 class
    indices, or float32 multi-hot rows over `labels` with `multi_label`, built from each image's label cell."""
    classes = tf.constant(rows["label_index"].to_numpy(), dtype=tf.int32)
    cells = tf.constant(rows["label"].astype(str).tolist())
    paths = tf.constant(rows["path"].tolist())
    multi_hot = _multi_hot_lookup(cells, labels) if multi_label else None

    def label_batch(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        row = example["row"]
        batch = {"image": example["image"], "label": multi_hot(row) if multi_hot else tf.gather(classes, row),
                 "path": tf.gather(paths, row)}
        return batch | ({"weight": tf.gather(weights, row)} if weights is not None else {})

    return elements.batch(batch_size, drop_remainder=False).map(label_batch, num_parallel_calls=AUTOTUNE)


def one_hot_labels(dataset: tf.data.Dataset, classes: int) -> tf.data.Dataset:
    return dataset.map(lambda example: {**example, "label": tf.one_hot(example["label"], classes)},
                       num_parallel_calls=AUTOTUNE)


def finished(dataset: tf.data.Dataset, *, with_paths: bool, weighted: bool) -> tf.data.Dataset:
    """Dictionaries with `with_paths`, else (images, labels) or (images, labels, weights) tuples as Keras takes
    them; prefetched."""
    if not with_paths:
        if weighted:
            dataset = dataset.map(lambda example: (example["image"], example["label"], example["weight"]),
                                  num_parallel_calls=AUTOTUNE)
        else:
            dataset = dataset.map(lambda example: (example["image"], example["label"]), num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


def split_batches(processed_dir: Path, split: str, image_size: int, batch_size: int, *, with_paths: bool = False,
                  one_hot: bool = False, multi_label: bool = False) -> tf.data.Dataset:
    """Batches of (uint8 images, labels) from one split in stored order, unaugmented (for evaluation).

    Labels are int32 class indices, float32 one-hot rows with `one_hot`, or float32 multi-hot rows over the
    vocabulary (labels.json) with `multi_label`. With `with_paths`, batches are dictionaries holding `image`,
    `label` and `path` (for reports).
    """
    rows = split_rows(processed_dir, split)
    labels = vocabulary(processed_dir)
    check_single_label(processed_dir, split, rows, multi_label)
    dataset = labelled_batches(examples(processed_dir, rows, image_size, training=False, seed=0), rows, labels,
                               batch_size, multi_label=multi_label)
    if one_hot and not multi_label:
        dataset = one_hot_labels(dataset, len(labels))
    return finished(dataset, with_paths=with_paths, weighted=False)
