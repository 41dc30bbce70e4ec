"""The processed store format: decoded uint8 images in bounded TFRecord shards, read back by the split table."""

import numpy as np
import pandas as pd
import pytest

from tasks import processed_store, shard_reader


def test_shards_are_bounded_written_once_and_read_back_in_order_by_the_split_table(tmp_path):
    generator = np.random.default_rng(0)
    pixels = [generator.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(10)]
    keys = [f"{index:064x}" for index in range(10)]
    record_bytes = len(processed_store._record(keys[0], pixels[0])) + processed_store.RECORD_OVERHEAD
    with processed_store.ShardWriter(tmp_path, 3 * record_bytes) as writer:
        shards = [writer.add(key, image) for key, image in zip(keys, pixels)]
    assert all((tmp_path / name).stat().st_size <= 3 * record_bytes for name in writer.written)
    assert writer.written == [f"decoded-{index:06d}.tfrecord" for index in range(1, 5)]
    assert writer.counts == dict.fromkeys(writer.written[:3], 3) | {writer.written[3]: 1}
    assert not [name for name in tmp_path.iterdir() if name.name.endswith(".partial")]
    assert [key for shard in writer.written for key, _ in processed_store.records(tmp_path, shard, 8)] == keys

    # the table decides: test holds every other image, with labels; image 9 was removed (its record stays)
    table = pd.DataFrame({"path": [f"label/{index}.png" for index in range(9)], "label": ["a", "b", "c"] * 3,
                          "label_index": [0, 1, 2] * 3, "split": ["test", "train"] * 4 + ["test"],
                          "sha256": keys[:9], "shard": shards[:9]})
    table.to_parquet(tmp_path / processed_store.SPLIT_TABLE)
    (tmp_path / processed_store.LABELS_FILE).write_text('["a", "b", "c"]')
    batches = list(shard_reader.split_batches(tmp_path, "test", 8, 4, with_paths=True))
    np.testing.assert_array_equal(np.concatenate([batch["image"].numpy() for batch in batches]),
                                  np.stack(pixels[0:9:2]))
    assert [path.decode() for batch in batches for path in batch["path"].numpy()] == [f"label/{index}.png"
                                                                                       for index in range(0, 9, 2)]
    assert [int(label) for batch in batches for label in batch["label"].numpy()] == [0, 2, 1, 0, 2]


class _FullDiskWriter:
    """A TFRecordWriter on a disk that fills up: writes a little, then fails as TensorFlow does, close included."""

    def __init__(self, path):
        import tensorflow as tf

        self.path, self.error = path, tf.errors.ResourceExhaustedError
        self.file = open(path, "wb")
        self.records = 0

    def write(self, record):
        self.records += 1
        if self.records > 2:
            raise self.error(None, None, f"{self.path}; No space left on device")
        self.file.write(record)

    def close(self):
        self.file.close()
        raise self.error(None, None, f"{self.path}; No space left on device")


def test_a_full_disk_is_said_in_plain_words_and_leaves_no_partial_shard(tmp_path, monkeypatch):
    import tensorflow as tf

    from tasks import disk_space

    monkeypatch.setattr(tf.io, "TFRecordWriter", _FullDiskWriter)
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(disk_space.DiskFull) as raised:
        with processed_store.ShardWriter(tmp_path, 2**20, needed_bytes=5 * 2**20) as writer:
            for index in range(5):
                writer.add(f"{index:064x}", pixels)
    message = str(raised.value)
    assert message.startswith("[Errno 28] the disk is full: cannot write the decoded image shards in " + str(tmp_path))
    assert "about 5 MiB needed" in message and "free space" in message
    assert "ResourceExhaustedError" not in message and isinstance(raised.value, OSError)
    assert list(tmp_path.iterdir()) == []  # the unfinished shard is gone although closing it failed too
