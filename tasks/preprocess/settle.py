"""What preprocess settles before it splits or decodes: the network `train.model` stands for and the image size
`preprocess.image_size: auto` stands for, each kept as an earlier run settled it (from its preprocess.json) so that
new images never switch a scheduled retrain to another network or size; reads the earlier summary, writes nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from tasks import model_choice, processed_store
from tasks.params import PreprocessParams

logger = logging.getLogger(__name__)


AUTO_MIN_SIZE = 32
AUTO_SIZE_STEP = 16


def choose_image_size(manifest: pd.DataFrame, most: int = 160) -> int:
    """preprocess.image_size: auto: the median short side of the images, clamped to 32..`most` and rounded to a
    multiple of 16 (photos of 400x530 get `most`, the 8 px demo digits 32 px)."""
    short_sides = manifest[["width", "height"]].min(axis=1)
    median = float(short_sides.median()) if len(short_sides) else AUTO_MIN_SIZE
    return int(min(most, max(AUTO_MIN_SIZE, round(median / AUTO_SIZE_STEP) * AUTO_SIZE_STEP)))


def median_short_side(manifest: pd.DataFrame) -> float:
    short_sides = manifest[["width", "height"]].min(axis=1)
    return float(short_sides.median()) if len(short_sides) else 0.0


def image_size(manifest: pd.DataFrame, params: PreprocessParams, folder: Path, choice: model_choice.Choice) -> int:
    """The size `auto` stands for: a pretrained backbone's own; else the one an earlier auto run chose under the same
    auto_max_size and network (new images must not move the median across a step and have every image decoded
    again), else choose_image_size()."""
    native = model_choice.native_size(choice)
    if native is not None:
        logger.info("preprocess.image_size auto: %d px, the size %s was made for", native, choice.model)
        return native
    earlier = processed_store.read_earlier_summary(folder)
    same_network = (earlier.get("model") or {}).get("model", choice.model) == choice.model
    if earlier.get("auto_max_size") == params.auto_max_size and isinstance(earlier.get("image_size"), int) \
            and same_network:
        logger.info("preprocess.image_size auto: %d px, as chosen by an earlier run", earlier["image_size"])
        return int(earlier["image_size"])
    size = choose_image_size(manifest, params.auto_max_size)
    logger.info("preprocess.image_size auto: %d px (the median short side of %d images, clamped to %d..%d, "
                "preprocess.auto_max_size)", size, len(manifest), AUTO_MIN_SIZE, params.auto_max_size)
    return size


def network(manifest: pd.DataFrame, model: str, weights: str | None, folder: Path) -> model_choice.Choice:
    """The network train.model stands for: as an earlier run settled it for the same train.model and train.weights
    (new images must not switch a scheduled retrain to another network), else chosen from the images now."""
    earlier = processed_store.read_earlier_summary(folder)
    if earlier.get("model_asked") == {"model": model, "weights": weights} and "model" in earlier:
        choice = model_choice.Choice.from_record(earlier["model"])
        logger.info("train.model %s: %s, as an earlier run settled it (%s)", model, choice.model, choice.reason)
        return choice
    choice = model_choice.choose(model, weights, median_short_side(manifest))
    logger.info("train.model %s: %s (%s)", model, choice.model, choice.reason)
    return choice
