import json

import numpy as np
import pandas as pd
import tensorflow as tf

from tasks import dataset, images, ingest, preprocess, shards
from tasks.split import assign_splits


def test_splits_never_move_when_images_are_added():
    def table(count):
        digests = [f"{index:064x}" for index in range(count)]
        return pd.DataFrame({"label": ["a", "b"] * (count // 2), "sha256": digests, "group": digests})

    before = assign_splits(table(1000), seed=7, val_fraction=0.15, test_fraction=0.15)
    after = assign_splits(table(3000), seed=7, val_fraction=0.15, test_fraction=0.15)
    assert (after["split"][:1000].to_numpy() == before["split"].to_numpy()).all()
    shares = after["split"].value_counts(normalize=True)
    assert abs(shares["test"] - 0.15) < 0.03 and abs(shares["val"] - 0.15) < 0.03
    other_seed = assign_splits(table(1000), seed=8, val_fraction=0.15, test_fraction=0.15)
    assert (other_seed["split"] != before["split"]).any()


def test_a_group_never_straddles_two_splits():
    frame = pd.DataFrame({"label": ["a"] * 300, "sha256": [f"{i:064x}" for i in range(300)],
                          "group": [f"group{i // 10}" for i in range(300)]})
    splits = assign_splits(frame, seed=1, val_fraction=0.2, test_fraction=0.2)
    assert (splits.groupby("group")["split"].nunique() == 1).all()


def test_shards_hold_the_pixels_prediction_sees(shrunk_config):
    config, paths = shrunk_config
    ingest.run(config.ingest, paths)
    table = preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)

    report = json.loads((paths.processed / "preprocess.json").read_text())
    assert sum(report["counts"].values()) == len(table) == 36
    split_report = json.loads((paths.reports / "split.json").read_text())
    assert split_report["images"] == report["counts"] and split_report["group_by"] is None
    assert {label: sum(counts.values()) for label, counts in split_report["per_class"].items()} == {
        "blue": 12, "green": 12, "red": 12}
    assert json.loads((paths.processed / "labels.json").read_text()) == ["blue", "green", "red"]

    size = config.preprocess.image_size
    seen = 0
    for split in ("train", "val", "test"):
        # evaluation order, inside tf.data
        for batch in dataset.split_dataset(paths.processed, split, size, 4, training=False, with_paths=True):
            for image, label, path in zip(batch["image"].numpy(), batch["label"].numpy(), batch["path"].numpy()):
                expected = images.load_rgb_array(paths.raw / path.decode(), size, config.preprocess.resize,
                                                 config.ingest.max_pixels)
                np.testing.assert_array_equal(image, expected)
                row = table[table["path"] == path.decode()].iloc[0]
                assert row["split"] == split and row["label_index"] == label
                seen += 1
    assert seen == 36

    # training order (shuffled, and through the augmentation map with every strength 0): the same pixels
    no_augmentation = config.preprocess.augment.model_copy(update={"rotation": 0.0, "zoom": 0.0, "translation": 0.0})
    training = dataset.split_dataset(paths.processed, "train", size, 4, training=True, augment=no_augmentation,
                                     with_paths=True)
    for batch in training:
        for image, path in zip(batch["image"].numpy(), batch["path"].numpy()):
            expected = images.load_rgb_array(paths.raw / path.decode(), size, config.preprocess.resize,
                                             config.ingest.max_pixels)
            np.testing.assert_array_equal(image, expected)


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


def test_training_batches_are_uint8_and_augmented_reproducibly(shrunk_config):
    config, paths = shrunk_config
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    size = config.preprocess.image_size

    def first_batch():
        tf.random.set_seed(0)
        data = dataset.split_dataset(paths.processed, "train", size, 4, training=True,
                                     augment=config.preprocess.augment, seed=3)
        return next(iter(data))

    images_batch, labels_batch = first_batch()
    assert images_batch.dtype == tf.uint8 and images_batch.shape[1:] == (size, size, 3)
    assert labels_batch.dtype == tf.int32
    again, _ = first_batch()
    np.testing.assert_array_equal(images_batch.numpy(), again.numpy())
