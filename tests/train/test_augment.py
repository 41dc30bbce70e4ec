"""Augmentation from params: what each transformation does, mixing, reproducibility, the preview grid."""

import hashlib
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tasks import augment, training_batches
from tasks.config import parse_config
from tasks.ingest import stage as ingest
from tasks.params import AugmentParams
from tasks.preprocess import stage as preprocess
from tasks.train import augment_preview

SEED = tf.constant([7, 1], tf.int64)


def _noise(count: int = 6, size: int = 12, low: int = 0, high: int = 256) -> tf.Tensor:
    return tf.constant(np.random.default_rng(0).integers(low, high, (count, size, size, 3), dtype=np.uint8))


def _apply(params: AugmentParams, images: tf.Tensor, labels: tf.Tensor | None = None, seed: tf.Tensor = SEED,
           num_classes: int = 10):
    labels = tf.zeros([images.shape[0]], tf.int32) if labels is None else labels
    return augment.augmenter(params, num_classes)(images, labels, seed)


def test_flips_mirror_exactly_and_zero_strengths_change_nothing():
    images = _noise(16)
    nothing = AugmentParams(horizontal_flip=False)  # the default flips: photos are mirror-symmetric
    assert not augment.is_active(nothing) and augment.is_active(AugmentParams())
    unchanged, labels = _apply(nothing, images)
    np.testing.assert_array_equal(unchanged.numpy(), images.numpy())
    flipped, _ = _apply(AugmentParams(horizontal_flip=True), images)
    mirrored = sum(np.array_equal(out, image[:, ::-1]) for out, image in zip(flipped.numpy(), images.numpy()))
    kept = sum(np.array_equal(out, image) for out, image in zip(flipped.numpy(), images.numpy()))
    assert mirrored + kept == 16 and 0 < mirrored < 16


def test_geometry_fills_by_reflection_and_same_seed_gives_same_images():
    strong = AugmentParams(horizontal_flip=True, vertical_flip=True, rotation=0.25, zoom=0.5, translation=0.3,
                           contrast=0.5, brightness=0.2)
    plain = tf.fill([4, 10, 10, 3], tf.constant(90, tf.uint8))
    geometry, _ = _apply(strong.model_copy(update={"contrast": 0.0, "brightness": 0.0}), plain)
    assert (geometry.numpy() == 90).all()  # no black corners: borders are mirrored in, as Keras' fill_mode="reflect"

    images = _noise()
    first, _ = _apply(strong, images)
    again, _ = _apply(strong, images)
    other, _ = _apply(strong, images, seed=tf.constant([7, 2], tf.int64))
    assert first.dtype == tf.uint8 and first.shape == images.shape
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert not np.array_equal(first.numpy(), other.numpy())
    # switching one transformation on leaves the random draws of the others as they were
    mid_grey = _noise(low=60, high=190)  # brightness 0.2 (51 levels) never clips these
    shift_only, _ = _apply(AugmentParams(translation=0.3), mid_grey)
    shift_and_brightness, _ = _apply(AugmentParams(translation=0.3, brightness=0.2), mid_grey)
    moved = shift_and_brightness.numpy().astype(int) - shift_only.numpy().astype(int)
    assert (np.ptp(moved.reshape(6, -1), axis=1) <= 1).all()  # one brightness shift per image, nothing else


@pytest.mark.parametrize("params", [AugmentParams(mixup=0.4), AugmentParams(cutmix=1.0)], ids=["mixup", "cutmix"])
def test_mixing_mixes_labels_in_the_shares_of_the_pixels(params):
    colours = np.array([0, 30, 60, 90, 120, 150, 180, 210], np.float64)
    images = tf.constant(np.broadcast_to(colours[:, None, None, None], (8, 16, 16, 3)).astype(np.uint8))
    mixed, labels = _apply(params, images, tf.range(8, dtype=tf.int32), num_classes=8)
    labels = labels.numpy()
    assert labels.shape == (8, 8) and labels.dtype == np.float32
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-5)
    # each image's mean value is the label-weighted mean of the colours it was made from
    np.testing.assert_allclose(mixed.numpy().mean(axis=(1, 2, 3)), labels @ colours, atol=0.51)
    assert (labels.max(axis=1) < 1).any()


def test_at_most_one_mixing_is_on():
    with pytest.raises(ValueError, match="preprocess.augment: at most one of mixup and cutmix may be > 0"):
        parse_config({"preprocess": {"augment": {"mixup": 0.2, "cutmix": 1.0}}})
    assert parse_config({"preprocess": {"augment": {"cutmix": 1.0}}}).preprocess.augment.mixing


def _epoch_digest(data: tf.data.Dataset) -> str:
    digest = hashlib.sha256()
    for images, labels in data:
        digest.update(images.numpy().tobytes())
        digest.update(labels.numpy().tobytes())
    return digest.hexdigest()


def test_training_input_is_reproducible_under_the_seed_and_trains_with_soft_labels(shrunk_config):
    config, paths = shrunk_config
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    size = config.preprocess.image_size
    params = config.preprocess.augment.model_copy(update={"horizontal_flip": True, "brightness": 0.1, "mixup": 0.2})

    def build(seed: int) -> tf.data.Dataset:
        tf.random.set_seed(0)  # what keras.utils.set_random_seed does at the start of training
        return training_batches.split_dataset(paths.processed, "train", size, 4, training=True, augment=params,
                                              seed=seed)

    data = build(3)
    first_epoch, second_epoch = _epoch_digest(data), _epoch_digest(data)
    assert first_epoch != second_epoch  # each epoch draws afresh
    again = build(3)
    assert [_epoch_digest(again), _epoch_digest(again)] == [first_epoch, second_epoch]
    assert _epoch_digest(build(4)) != first_epoch

    images, labels = next(iter(data))
    assert images.dtype == tf.uint8 and labels.dtype == tf.float32 and labels.shape[1:] == (3,)
    val_data = training_batches.split_dataset(paths.processed, "val", size, 4, training=False, one_hot=True)
    assert next(iter(val_data))[1].shape[1:] == (3,)
    inputs = keras.Input((size, size, 3), dtype="uint8")
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    network = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(features))
    network.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    history = network.fit(data, validation_data=val_data, epochs=2, shuffle=False, verbose=0)
    assert np.isfinite(history.history["val_loss"]).all()


def test_preview_grid_shows_each_image_and_its_draws(shrunk_config):
    config, paths = shrunk_config
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    output = augment_preview.run(config.preprocess.augment, config.base.seed, paths, image_count=5, draws=3)
    assert output == paths.reports / "augmentation_preview.png"
    cell = 16 * 6  # 16 px images enlarged to at least 96 px
    labels = json.loads((paths.processed / "preprocess.json").read_text())["labels"]
    first = next(iter(training_batches.split_dataset(paths.processed, "train", 16, 5, training=False)))
    row_labels = [labels[index] for index in first[1].numpy()]
    images, _ = first
    rows = augment_preview.preview_rows(images.numpy(), first[1].numpy(), config.preprocess.augment,
                                        config.base.seed, 3, len(labels))
    grid = np.asarray(augment_preview.grid(rows, scale=6))
    assert grid.shape[:2] == (5 * (cell + 2) + 2, 4 * (cell + 2) + 2)
    first_row = grid[2:2 + cell]
    original, draw = first_row[:, 2:2 + cell], first_row[:, 2 + cell + 2:2 + 2 * cell + 2]
    assert not np.array_equal(original, draw)  # rotation, zoom and translation are on in params.yaml
    with Image.open(output) as preview:  # the grid, labelled: the header, each row's class, the settings
        assert preview.format == "PNG"
        assert preview.width > grid.shape[1] and preview.height > grid.shape[0]
        page = np.asarray(preview.convert("RGB"))
    assert _contains(page, grid)
    settings = augment_preview.settings_text(config.preprocess.augment, config.base.seed)
    assert "rotation 0.05" in settings and "zoom 0.1" in settings and "base.seed 42" in settings
    assert row_labels and set(row_labels) <= set(labels)
    header = page[:augment_preview.LABEL_FONT_PIXELS + 2 * augment_preview.MARGIN_PIXELS]
    assert (header < 128).any()  # the column titles are drawn


def _contains(page: np.ndarray, grid: np.ndarray) -> bool:
    """Whether `grid` appears unchanged somewhere in `page`."""
    rows, columns = grid.shape[:2]
    for top in range(page.shape[0] - rows + 1):
        for left in range(page.shape[1] - columns + 1):
            if np.array_equal(page[top, left:left + columns], grid[0]) and \
                    np.array_equal(page[top:top + rows, left:left + columns], grid):
                return True
    return False
