"""The processed store format: decoded uint8 images in bounded TFRecord shards (written and read by compaction without
TensorFlow, read by tf.data for training), read back by the split table."""

import errno

import numpy as np
import pandas as pd
import pytest

from tasks import processed_store, shard_reader, tfrecord_file


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
    """A shard file on a disk that fills up: writes a little, then fails as a file does, close included."""

    def __init__(self, path):
        self.path = path
        self.file = open(path, "wb")
        self.records = 0

    def _full(self):
        return OSError(errno.ENOSPC, "No space left on device", str(self.path))

    def write(self, record):
        self.records += 1
        if self.records > 2:
            raise self._full()
        self.file.write(record)

    def close(self):
        self.file.close()
        raise self._full()


def test_a_full_disk_is_said_in_plain_words_and_leaves_no_partial_shard(tmp_path, monkeypatch):
    from tasks import disk_space

    monkeypatch.setattr(tfrecord_file, "Writer", _FullDiskWriter)
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(disk_space.DiskFull) as raised:
        with processed_store.ShardWriter(tmp_path, 2**20, needed_bytes=5 * 2**20) as writer:
            for index in range(5):
                writer.add(f"{index:064x}", pixels)
    message = str(raised.value)
    assert message.startswith("[Errno 28] the disk is full: cannot write the decoded image shards in " + str(tmp_path))
    assert "about 5 MiB needed" in message and "free space" in message
    assert "No space left on device" not in message and isinstance(raised.value, OSError)
    assert list(tmp_path.iterdir()) == []  # the unfinished shard is gone although closing it failed too


def _images(count: int, size: int = 8, seed: int = 0) -> tuple[list[str], list[np.ndarray]]:
    generator = np.random.default_rng(seed)
    keys = [f"{generator.integers(2**62):064x}" for _ in range(count)]
    return keys, [generator.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def _one_shard(folder, keys, pixels) -> str:
    """Write the images into one shard with ShardWriter (without TensorFlow); its name."""
    with processed_store.ShardWriter(folder, 2**20) as writer:
        for key, image in zip(keys, pixels):
            writer.add(key, image)
    [name] = writer.written
    return name


def test_shards_written_without_tensorflow_are_what_tensorflow_writes_and_reads(tmp_path):
    import tensorflow as tf

    keys, pixels = _images(40)
    name = _one_shard(tmp_path, keys, pixels)

    # tf.data and parse_batch (what training reads with) see the same keys and pixels
    read_keys, read_pixels = [], []
    for batch in tf.data.TFRecordDataset(str(tmp_path / name)).batch(16):
        parsed = processed_store.parse_batch(batch, 8)
        read_keys += [key.decode("ascii") for key in parsed["sha256"].numpy()]
        read_pixels += list(parsed["image"].numpy())
    assert read_keys == keys
    np.testing.assert_array_equal(np.stack(read_pixels), np.stack(pixels))

    # and the file is byte for byte the one tf.io.TFRecordWriter writes of the same Examples
    reference = tmp_path / "reference.tfrecord"
    with tf.io.TFRecordWriter(str(reference)) as tf_writer:
        for key, image in zip(keys, pixels):
            feature = {"sha256": tf.train.Feature(bytes_list=tf.train.BytesList(value=[key.encode("ascii")])),
                       "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()]))}
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            tf_writer.write(example.SerializeToString(deterministic=True))
    assert (tmp_path / name).read_bytes() == reference.read_bytes()


def test_shards_written_by_tensorflow_are_read_without_it(tmp_path):
    import tensorflow as tf

    keys, pixels = _images(30, size=5, seed=1)
    with tf.io.TFRecordWriter(str(tmp_path / "decoded-000001.tfrecord")) as tf_writer:
        for key, image in zip(keys, pixels):
            feature = {"sha256": tf.train.Feature(bytes_list=tf.train.BytesList(value=[key.encode("ascii")])),
                       "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()]))}
            tf_writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    read = list(processed_store.records(tmp_path, "decoded-000001.tfrecord", 5))
    assert [key for key, _ in read] == keys
    np.testing.assert_array_equal(np.stack([image for _, image in read]), np.stack(pixels))
    assert all(image.dtype == np.uint8 and image.shape == (5, 5, 3) for _, image in read)


def test_the_example_encoder_matches_protobuf_and_the_decoder_reads_what_protobuf_writes():
    import tensorflow as tf

    features = {"sha256": b"ab" * 32, "image": bytes(range(256)) * 40, "empty": b"", "\u00e9t\u00e9": b"x"}
    example = tf.train.Example(features=tf.train.Features(feature={
        key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[value])) for key, value in features.items()}))
    assert tfrecord_file.encode_example(features) == example.SerializeToString(deterministic=True)
    example.features.feature["many"].bytes_list.value.extend([b"1", b"22", b""])
    example.features.feature[""].bytes_list.value.append(b"no name")  # protobuf leaves out the empty key's field
    decoded = tfrecord_file.decode_example(example.SerializeToString())
    assert {key: [bytes(value) for value in values] for key, values in decoded.items()} == (
        {key: [value] for key, value in features.items()} | {"many": [b"1", b"22", b""], "": [b"no name"]})
    example.features.feature["count"].int64_list.value.append(3)
    with pytest.raises(ValueError, match="feature 'count' is a int64_list; only bytes features are read here"):
        tfrecord_file.decode_example(example.SerializeToString())


def test_a_damaged_shard_is_said_with_its_name(tmp_path):
    keys, pixels = _images(3)
    name = _one_shard(tmp_path, keys, pixels)
    good = (tmp_path / name).read_bytes()
    record = len(good) // 3  # where the second record starts

    def flipped(offset: int, bit: int) -> bytes:
        return good[:offset] + bytes([good[offset] ^ bit]) + good[offset + 1:]

    damages = {  # what is changed: the message's words
        "data": (flipped(record + 40, 1), "its data fails its checksum"),
        "length": (flipped(record, 4), "its length fails its checksum"),
        "cut": (good[:-5], "it is cut short"),
        "header": (good + good[:7], "its header is cut short"),
    }
    for damage, (content, words) in damages.items():
        (tmp_path / name).write_bytes(content)
        read = processed_store.records(tmp_path, name, 8)
        if damage in ("data", "length"):
            next(read)  # the first record is whole
        with pytest.raises(ValueError) as raised:
            list(read)
        message = str(raised.value)
        assert message.startswith(f"{tmp_path / name}: the record at byte ") and words in message, damage
        assert "delete that shard and run the preprocess stage again" in message
    (tmp_path / name).write_bytes(good)
    with pytest.raises(ValueError, match=f"{name}: a record is not one sha256 and 9x9x3 pixels"):
        list(processed_store.records(tmp_path, name, 9))
