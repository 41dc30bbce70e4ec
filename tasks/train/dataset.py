"""tf.data builders: read the decoded shards and split table in data/processed/, yield uint8 image batches for
training and evaluation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import tensorflow as tf

from tasks import label_sets, pool, processed_store, stored_images
from tasks.params import AugmentParams
from tasks.train import augment as augmentation
from tasks.train import balance

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


def _records_from_raw(processed_dir: Path, rows: pd.DataFrame, image_size: int) -> tf.data.Dataset:
    """The same elements as _records, decoded from the raw store (over all cores) when preprocess kept no pixels (a
    head on a pretrained backbone's features: only fine-tuning and checks need pixels, at the backbone's size)."""
    summary = json.loads((processed_dir / processed_store.SUMMARY_FILE).read_text(encoding="utf-8"))
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
    summary_file = processed_dir / processed_store.SUMMARY_FILE
    if not summary_file.is_file():  # a folder of shards and a split table alone (written by hand, or older)
        return True
    return bool(json.loads(summary_file.read_text(encoding="utf-8")).get("pixels", True))


def _multi_hot_lookup(cells: tf.Tensor, labels: list[str]):
    """A function of row positions -> their float32 multi-hot rows, built in tf.data from the label cells ("a;b")."""
    vocabulary = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(labels), tf.range(len(labels), dtype=tf.int64)),
        default_value=-1)

    def multi_hot(row: tf.Tensor) -> tf.Tensor:
        parts = tf.strings.split(tf.gather(cells, row), label_sets.SEPARATOR)
        hot = tf.ragged.map_flat_values(lambda ids: tf.one_hot(ids, len(labels)), vocabulary.lookup(parts))
        return tf.minimum(tf.reduce_sum(hot, axis=1), 1.0)

    return multi_hot


def _balanced_sampling(dataset: tf.data.Dataset, classes: tf.Tensor, counts: list[int], seed: int,
                       images: int) -> tf.data.Dataset:
    """Draw elements so that every class present is equally likely (tf.data rejection resampling over the
    repeated, reshuffled split), `images` per epoch as without it, so an epoch keeps its number of steps."""
    total = float(sum(counts))
    present = sum(1 for count in counts if count > 0)
    initial = [count / total for count in counts]
    target = [1.0 / present if count > 0 else 0.0 for count in counts]
    dataset = dataset.repeat().rejection_resample(
        lambda example: tf.gather(classes, example["row"]), target_dist=target, initial_dist=initial, seed=seed)
    return dataset.map(lambda _, example: example, num_parallel_calls=AUTOTUNE).take(images)


def split_dataset(
    processed_dir: Path, split: str, image_size: int, batch_size: int, *, training: bool,
    augment: AugmentParams | None = None, seed: int = 0, with_paths: bool = False, one_hot: bool = False,
    multi_label: bool = False, class_weight: str = "none", sampling: str = "natural",
) -> tf.data.Dataset:
    """Batches of (uint8 images, labels) from one split; `training` shuffles and augments, else order is kept.

    Labels are int32 class indices, or float32 one-hot rows with `one_hot` and always when `augment` mixes
    images (mixup, cutmix), since mixed labels are soft; with `multi_label` float32 multi-hot rows over the
    vocabulary (labels.json), built from each image's label cell. Shuffling and augmentation follow from `seed` (and
    TensorFlow's global seed, which the train stage sets), the epoch and the batch's position, so a run is
    reproducible and each epoch draws afresh. With `with_paths`, batches are dictionaries holding `image`,
    `label` and `path` (for reports).

    `class_weight: balanced` adds each image's loss weight (tasks/train/balance.py) as a third element (or `weight`),
    which Keras applies to the loss as a sample weight. `sampling: balanced` (single-label, training) draws every
    class equally often.
    """
    rows = split_rows(processed_dir, split)
    vocabulary = json.loads((processed_dir / processed_store.LABELS_FILE).read_text(encoding="utf-8"))
    if not multi_label and (rows["label_index"] < 0).any():
        raise ValueError(f"{processed_dir}: some {split} images have several labels; read them with multi_label")
    labels = tf.constant(rows["label_index"].to_numpy(), dtype=tf.int32)
    cells = tf.constant(rows["label"].astype(str).tolist())
    paths = tf.constant(rows["path"].tolist())
    weights = (tf.constant(balance.image_weights(rows["label"].astype(str).tolist(), vocabulary))
               if class_weight == "balanced" else None)
    multi_hot = _multi_hot_lookup(cells, vocabulary) if multi_label else None
    if has_pixels(processed_dir):
        dataset = _records(processed_dir, rows, image_size, training, seed)
    else:
        dataset = _records_from_raw(processed_dir, rows, image_size)
    if fits_in_memory(len(rows) * (image_size * image_size * 3 + 64)):
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    if training and sampling == "balanced":
        if multi_label:
            raise ValueError("train.sampling: balanced draws one class per image, so it applies to single-label data; "
                             "for multi-label data use train.class_weight: balanced and sampling: natural")
        counts = rows["label_index"].value_counts().reindex(range(len(vocabulary)), fill_value=0).tolist()
        dataset = _balanced_sampling(dataset, labels, counts, seed, len(rows))
    dataset = dataset.batch(batch_size, drop_remainder=False)

    def label_batch(example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        row = example["row"]
        batch = {"image": example["image"], "label": multi_hot(row) if multi_hot else tf.gather(labels, row),
                 "path": tf.gather(paths, row)}
        return batch | ({"weight": tf.gather(weights, row)} if weights is not None else {})

    dataset = dataset.map(label_batch, num_parallel_calls=AUTOTUNE)

    mixing = training and augment is not None and augment.mixing
    if training and augment is not None and augmentation.is_active(augment):
        classes = len(vocabulary) if mixing else 0
        augment_batch = augmentation.augmenter(augment, classes)

        def apply(example: dict[str, tf.Tensor], batch_seed: tf.Tensor) -> dict[str, tf.Tensor]:
            images, labels = augment_batch(example["image"], example["label"], batch_seed)
            return {**example, "image": images, "label": labels}

        # One seed per batch, from a stream that is fixed by `seed` and drawn afresh on every pass (epoch):
        # the map may then run in parallel and still give the same batches in every run.
        batch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, batch_seeds)
        dataset = dataset.map(apply, num_parallel_calls=AUTOTUNE, deterministic=True)
    if one_hot and not mixing and not multi_label:
        classes = len(vocabulary)
        dataset = dataset.map(lambda example: {**example, "label": tf.one_hot(example["label"], classes)},
                              num_parallel_calls=AUTOTUNE)
    if not with_paths:
        if weights is not None:
            dataset = dataset.map(lambda example: (example["image"], example["label"], example["weight"]),
                                  num_parallel_calls=AUTOTUNE)
        else:
            dataset = dataset.map(lambda example: (example["image"], example["label"]), num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)
