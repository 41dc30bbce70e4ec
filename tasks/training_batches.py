"""tf.data builders for training: read the decoded shards and split table in data/processed/ (tasks/shard_reader.py),
yield uint8 image batches, shuffled, balanced and augmented when training."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from tasks import augment as augmentation
from tasks import class_balance, shard_reader
from tasks.params import AugmentParams

AUTOTUNE = tf.data.AUTOTUNE


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

    `class_weight: balanced` adds each image's loss weight (tasks/class_balance.py) as a third element (or `weight`),
    which Keras applies to the loss as a sample weight. `sampling: balanced` (single-label, training) draws every
    class equally often.
    """
    rows = shard_reader.split_rows(processed_dir, split)
    vocabulary = shard_reader.vocabulary(processed_dir)
    shard_reader.check_single_label(processed_dir, split, rows, multi_label)
    weights = (tf.constant(class_balance.image_weights(rows["label"].astype(str).tolist(), vocabulary))
               if class_weight == "balanced" else None)
    dataset = shard_reader.examples(processed_dir, rows, image_size, training=training, seed=seed)
    if training and sampling == "balanced":
        if multi_label:
            raise ValueError("train.sampling: balanced draws one class per image, so it applies to single-label data; "
                             "for multi-label data use train.class_weight: balanced and sampling: natural")
        counts = rows["label_index"].value_counts().reindex(range(len(vocabulary)), fill_value=0).tolist()
        classes = tf.constant(rows["label_index"].to_numpy(), dtype=tf.int32)
        dataset = _balanced_sampling(dataset, classes, counts, seed, len(rows))
    dataset = shard_reader.labelled_batches(dataset, rows, vocabulary, batch_size, multi_label=multi_label,
                                            weights=weights)

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
        dataset = shard_reader.one_hot_labels(dataset, len(vocabulary))
    return shard_reader.finished(dataset, with_paths=with_paths, weighted=weights is not None)
