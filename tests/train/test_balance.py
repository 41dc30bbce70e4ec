"""Class imbalance: balanced class weights reach the loss as sample weights, balanced sampling evens the classes out,
and on a 10:1 imbalanced set both raise the minority class's recall over plain training."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.utils.class_weight import compute_class_weight

from tasks import class_balance, training_batches
from tasks.config import load_config
from tasks.evaluate import stage as evaluate
from tasks.ingest import stage as ingest
from tasks.paths import Paths
from tasks.preprocess import stage as preprocess
from tasks.train import stage as train
from tests.conftest import PROJECT_ROOT

COLOURS = {"major": (120, 120, 120), "minor": (150, 120, 90)}  # overlapping: each image's colour varies a lot


def write_imbalanced(root, counts: dict[str, dict[str, int]], size: int = 8):
    """root/<split>/<class>/ images: a flat colour per image, drawn around its class's colour, plus pixel noise."""
    generator = np.random.default_rng(7)
    for split, per_class in counts.items():
        for label, count in per_class.items():
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                colour = np.array(COLOURS[label]) + generator.normal(0, 22, 3)
                pixels = colour + generator.normal(0, 6, (size, size, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{index:03d}.png")
    return root


def configure(tmp_path, source, **overrides):
    config, _ = load_config(PROJECT_ROOT / "params.yaml", overrides={
        "ingest.source": str(source), "ingest.near_duplicate_distance": 0, "validate.min_images_per_class": 3,
        "preprocess.image_size": 8, "preprocess.augment.horizontal_flip": False, "preprocess.augment.rotation": 0.0,
        "preprocess.augment.zoom": 0.0, "preprocess.augment.translation": 0.0, "train.batch_size": 16,
        "train.width": 8, "train.depth": 1, **overrides})
    return config, Paths(config.paths, tmp_path)


def test_balanced_class_weights_match_scikit_learn_and_weigh_images():
    labels = ["a", "b", "c"]
    cells = ["a"] * 6 + ["b"] * 3 + ["c"]
    counts = class_balance.class_counts(cells, labels)
    expected = compute_class_weight("balanced", classes=np.array(labels), y=np.array(cells))
    assert class_balance.balanced_class_weights(counts) == pytest.approx(expected)
    weights = class_balance.image_weights(cells, labels)
    assert weights.mean() == pytest.approx(1.0)
    assert weights[-1] / weights[0] == pytest.approx(6.0)  # c is 6 times rarer than a
    assert class_balance.imbalance_ratio(counts) == 6.0
    multi = class_balance.image_weights(["a;b", "a", "a"], ["a", "b"])  # a: 3 images, b: 1
    assert multi[0] > multi[1] == multi[2]


def test_balanced_class_weights_reach_the_loss(tmp_path):
    """tensorflow#33550: Keras's class_weight is silently ignored with some tf.data inputs, so the weights travel as
    each image's sample weight in the dataset; the loss Keras computes must be the weighted one."""
    import keras

    from tasks import networks

    source = write_imbalanced(tmp_path / "source", {"train": {"major": 30, "minor": 6}, "val": {"major": 5, "minor": 5},
                                                    "test": {"major": 5, "minor": 5}})
    config, paths = configure(tmp_path, source)
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    weighted = training_batches.split_dataset(paths.processed, "train", 8, 64, training=False, class_weight="balanced")
    plain = training_batches.split_dataset(paths.processed, "train", 8, 64, training=False)
    images, labels, weights = next(iter(weighted))
    labels, weights = labels.numpy(), weights.numpy()
    assert weights[labels == 1].min() == pytest.approx(5 * weights[labels == 0].max())  # minor is 5 times rarer
    keras.utils.set_random_seed(0)
    network = networks.simple_cnn(8, 2, depth=1, width=4, dropout=0.0)
    network.compile(loss="sparse_categorical_crossentropy")
    per_image = keras.losses.sparse_categorical_crossentropy(labels, network.predict_on_batch(images.numpy()))
    per_image = np.asarray(per_image)
    weighted_loss, plain_loss = network.evaluate(weighted, verbose=0), network.evaluate(plain, verbose=0)
    assert weighted_loss == pytest.approx(float((weights * per_image).mean()), rel=1e-4)
    assert plain_loss == pytest.approx(float(per_image.mean()), rel=1e-4)
    assert abs(weighted_loss - plain_loss) > 1e-3


def test_balanced_sampling_draws_the_classes_evenly(tmp_path):
    source = write_imbalanced(tmp_path / "source", {"train": {"major": 90, "minor": 9}, "val": {"major": 3, "minor": 3},
                                                    "test": {"major": 3, "minor": 3}})
    config, paths = configure(tmp_path, source)
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    drawn = np.concatenate([labels.numpy() for _, labels, _ in training_batches.split_dataset(
        paths.processed, "train", 8, 16, training=True, seed=1, sampling="balanced", class_weight="balanced")])
    assert len(drawn) == 99  # an epoch keeps its length
    assert 0.35 < drawn.mean() < 0.65  # the minority class (index 1) is a tenth of the images, about half the draws


def test_minority_recall_rises_with_balanced_weights_or_sampling(tmp_path):
    source = write_imbalanced(tmp_path / "source", {"train": {"major": 150, "minor": 15},
                                                    "val": {"major": 40, "minor": 4},
                                                    "test": {"major": 40, "minor": 40}})
    recalls = {}
    for name, overrides in (("none", {"train.class_weight": "none"}),
                            ("balanced", {"train.class_weight": "balanced"}),
                            ("sampling", {"train.class_weight": "none", "train.sampling": "balanced"})):
        config, paths = configure(tmp_path / name, source, **{"train.epochs": 12, "train.min_epochs": 12,
                                                              **overrides})
        ingest.run(config.ingest, paths)
        preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
        train.run(config.train, config.preprocess.augment, config.base.seed, paths)
        metrics = evaluate.run(config.evaluate, config.base.seed, config.ingest.max_pixels, paths)
        recalls[name] = metrics["per_class"]["minor"]["recall"]
        print(name, recalls[name], json.loads((paths.candidate / "model_card.json").read_text())["validation"])
        assert (pd.read_parquet(paths.processed / "split.parquet")["split"] == "test").sum() == 80
    assert recalls["balanced"] >= recalls["none"] + 0.1, recalls  # 4 of the 40 minority test images
    assert recalls["sampling"] >= recalls["none"] + 0.1, recalls
