"""The shard format: writes and parses TFRecord files of decoded uint8 images with their label index and path."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf

SHARD_PATTERN = "{split}-{index:05d}-of-{count:05d}.tfrecord"


def shard_files(processed_dir: Path, split: str) -> list[Path]:
    files = sorted(processed_dir.glob(f"{split}-*.tfrecord"))
    if not files:
        raise ValueError(f"{processed_dir}: no {split} shards found; run the preprocess stage first")
    return files


def _example(image: np.ndarray, label_index: int, path: str) -> bytes:
    features = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label_index])),
        "path": tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.encode("utf-8")])),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def write_split(
    examples: Iterable[tuple[np.ndarray, int, str]], count: int, bytes_per_image: int, shard_bytes: int,
    directory: Path, split: str,
) -> list[Path]:
    """Write `count` examples into as few shards of at most about `shard_bytes` each as that takes."""
    shard_count = max(1, -(-count * bytes_per_image // shard_bytes))
    per_shard = -(-count // shard_count) if count else 0
    paths = [directory / SHARD_PATTERN.format(split=split, index=index, count=shard_count) for index in range(shard_count)]
    writers = [tf.io.TFRecordWriter(str(path)) for path in paths]
    try:
        for position, (image, label_index, path) in enumerate(examples):
            writers[position // per_shard].write(_example(image, label_index, path))
    finally:
        for writer in writers:
            writer.close()
    return paths


def parse_batch(serialized: tf.Tensor, image_size: int) -> dict[str, tf.Tensor]:
    """Parse a batch of serialized examples into uint8 images [batch, size, size, 3], labels and paths."""
    features = tf.io.parse_example(
        serialized,
        {
            "image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "path": tf.io.FixedLenFeature([], tf.string),
        },
    )
    images = tf.io.decode_raw(features["image"], tf.uint8)
    images = tf.reshape(images, [-1, image_size, image_size, 3])
    return {"image": images, "label": tf.cast(features["label"], tf.int32), "path": features["path"]}
