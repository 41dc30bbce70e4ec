"""Augmentation preview: reads the train shards in data/processed/, writes data/reports/augmentation_preview.png.

One row per training image, its class at the left: the image as stored (the column headed "original"), then
several augmented draws of it, exactly as training augments a batch (the same code, with mixup or cutmix
partners taken from the same rows); the settings that made them are written underneath.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from tasks import atomic, augment, processed_store, shard_reader
from tasks.params import AugmentParams
from tasks.paths import Paths

logger = logging.getLogger(__name__)

PREVIEW_FILE_NAME = "augmentation_preview.png"
MIN_CELL_PIXELS = 96  # small images are enlarged (nearest neighbour) to at least this side, so a person can see them
GAP_PIXELS = 2
BACKGROUND = (255, 255, 255)


def grid(rows: list[list[np.ndarray]], scale: int) -> Image.Image:
    """Tile equally sized uint8 RGB images into rows, each enlarged `scale` times, with white gaps between."""
    cell = rows[0][0].shape[0] * scale
    columns = max(len(row) for row in rows)
    step = cell + GAP_PIXELS
    canvas = Image.new("RGB", (columns * step + GAP_PIXELS, len(rows) * step + GAP_PIXELS), BACKGROUND)
    for row_index, row in enumerate(rows):
        for column_index, pixels in enumerate(row):
            tile = Image.fromarray(pixels, "RGB").resize((cell, cell), Image.Resampling.NEAREST)
            canvas.paste(tile, (GAP_PIXELS + column_index * step, GAP_PIXELS + row_index * step))
    return canvas


LABEL_FONT_PIXELS = 14
MARGIN_PIXELS = 6


def settings_text(params: AugmentParams, seed: int) -> str:
    """The augmentation settings in force, as one line: `preprocess.augment: rotation 0.05, zoom 0.1 (seed 42)`."""
    active = [name.replace("_", " ") if value is True else f"{name} {value:g}"
              for name, value in params.model_dump().items() if value]
    return f"preprocess.augment: {', '.join(active) if active else 'off (every strength 0)'}  (base.seed {seed})"


def labelled(canvas: Image.Image, cell: int, row_labels: list[str], draws: int, caption: str) -> Image.Image:
    """The grid with a header (which column is the original, which are draws), each row's class at its left and
    the settings underneath, so that the picture explains itself."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default(size=LABEL_FONT_PIXELS)
    measure = ImageDraw.Draw(canvas)
    label_width = max(measure.textlength(label, font=font) for label in [*row_labels, "class"]) + 2 * MARGIN_PIXELS
    header, footer = LABEL_FONT_PIXELS + 2 * MARGIN_PIXELS, LABEL_FONT_PIXELS + 2 * MARGIN_PIXELS
    width = max(int(label_width) + canvas.width, int(measure.textlength(caption, font=font)) + 2 * MARGIN_PIXELS)
    page = Image.new("RGB", (width, header + canvas.height + footer), BACKGROUND)
    page.paste(canvas, (int(label_width), header))
    draw = ImageDraw.Draw(page)
    step = cell + GAP_PIXELS
    titles = ["original", *(f"draw {index}" for index in range(1, draws + 1))]
    for column, title in enumerate(titles):
        left = int(label_width) + GAP_PIXELS + column * step
        draw.text((left + cell / 2, header / 2), title, fill=(0, 0, 0), font=font, anchor="mm")
    draw.text((MARGIN_PIXELS, header / 2), "class", fill=(90, 90, 90), font=font, anchor="lm")
    for row, label in enumerate(row_labels):
        draw.text((MARGIN_PIXELS, header + GAP_PIXELS + row * step + cell / 2), label, fill=(0, 0, 0), font=font,
                  anchor="lm")
    draw.text((MARGIN_PIXELS, header + canvas.height + footer / 2), caption, fill=(60, 60, 60), font=font,
              anchor="lm")
    return page


def preview_rows(images: np.ndarray, labels: np.ndarray, params: AugmentParams, seed: int, draws: int,
                 num_classes: int) -> list[list[np.ndarray]]:
    """For each image, the original followed by `draws` augmented versions (each draw one batch seed)."""
    rows = [[image] for image in images]
    augment_batch = augment.augmenter(params, num_classes)
    for draw in range(draws):
        augmented, _ = augment_batch(tf.constant(images), tf.constant(labels), tf.constant([seed, draw], tf.int64))
        for row, image in zip(rows, augmented.numpy()):
            row.append(image)
    return rows


def row_label(label: np.ndarray, names: list[str]) -> str:
    """A row's caption: its class, or for a multi-label image (a multi-hot row) its labels joined with ";"."""
    values = np.asarray(label)
    if values.ndim == 0:
        index = int(values)
        return str(names[index]) if 0 <= index < len(names) else str(index)
    return ";".join(str(names[index]) for index in np.flatnonzero(values >= 0.5) if index < len(names)) or "(none)"


def run(params: AugmentParams, seed: int, paths: Paths, image_count: int = 8, draws: int = 5) -> Path:
    """Write the preview grid of the first `image_count` training images (in shard order) and return its path."""
    summary = processed_store.read_summary(paths.processed)
    image_size = int(summary["image_size"])
    first = next(iter(shard_reader.split_batches(paths.processed, "train", image_size, image_count, with_paths=True,
                                                 multi_label=summary.get("task") == "multi_label")))
    images, labels = first["image"].numpy(), first["label"].numpy()
    if not augment.is_active(params):
        logger.info("augmentation is off (every preprocess.augment strength is 0): the draws equal the originals")
    rows = preview_rows(images, labels, params, seed, draws, shard_reader.num_classes(paths.processed))
    names = summary.get("labels") or []
    row_labels = [row_label(label, names) for label in labels]
    scale = max(1, math.ceil(MIN_CELL_PIXELS / image_size))
    picture = labelled(grid(rows, scale), image_size * scale, row_labels, draws, settings_text(params, seed))
    output = paths.reports / PREVIEW_FILE_NAME
    with atomic.atomic_path(output) as temporary:
        picture.save(temporary, format="PNG")
    logger.info("augmentation preview: %d images x %d draws, wrote %s", len(images), draws, output)
    return output
