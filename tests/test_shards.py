"""The processed-shard format: TFRecord files of decoded uint8 images, written in bounded shards, read back in order."""

import json

import numpy as np
import tensorflow as tf

from tasks import shards
from tasks.train import dataset


def test_a_large_split_is_written_as_several_shards_read_back_in_order(tmp_path):
    generator = np.random.default_rng(0)
    pixels = [generator.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(10)]
    examples = [(image, index % 3, f"label/{index}.png") for index, image in enumerate(pixels)]
    bytes_per_example = 8 * 8 * 3 + len("label/0.png") + 96  # as preprocess estimates it
    written = shards.write_split(iter(examples), 10, bytes_per_example, 3 * bytes_per_example, tmp_path, "train")
    assert [path.name for path in written] == [f"train-{index:05d}-of-00004.tfrecord" for index in range(4)]
    assert [sum(1 for _ in tf.data.TFRecordDataset(str(path))) for path in written] == [3, 3, 3, 1]
    assert all(path.stat().st_size <= 3 * bytes_per_example for path in written)
    (tmp_path / "labels.json").write_text(json.dumps(["a", "b", "c"]))
    batches = list(dataset.split_dataset(tmp_path, "train", 8, 4, training=False, with_paths=True))
    np.testing.assert_array_equal(np.concatenate([batch["image"].numpy() for batch in batches]), np.stack(pixels))
    assert [path.decode() for batch in batches for path in batch["path"].numpy()] == [path for _, _, path in examples]
