import json

import numpy as np
import pandas as pd
import tensorflow as tf

from tasks import dataset, images, ingest, preprocess
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
