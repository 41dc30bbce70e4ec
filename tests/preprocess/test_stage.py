import json

import numpy as np

from tasks import images
from tasks.ingest import stage as ingest
from tasks.preprocess import stage as preprocess
from tasks.train import dataset


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
