"""Draws the likely label errors as a grid of thumbnails, each captioned with its given and suggested label; reads the
images from data/raw/ (through the manifest), returns PNG bytes (the stage writes them with the rest of its report).
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # the object API draws with Agg and touches no global pyplot state

from tasks import stored_images

logger = logging.getLogger(__name__)

THUMBNAIL_SIDE = 128
COLUMNS = 6
DPI = 100


def _literal(text: object, width: int = 18) -> str:
    """Text as matplotlib should print it (a "$" is no mathtext), cut to `width` characters."""
    text = str(text)
    text = text if len(text) <= width else text[:width - 1] + "…"
    return text.replace("$", r"\$")


def thumbnails(raw: Path, manifest: Path, names: list[str], max_pixels: int) -> list[np.ndarray | None]:
    """Pictures of images by manifest path, from the raw store; None for one that cannot be decoded."""
    return stored_images.pictures(raw, manifest, names, THUMBNAIL_SIDE, max_pixels,
                                  lambda name, error: logger.warning("health gallery: cannot show %s: %s", name, error))


def draw(rows: pd.DataFrame, pictures: list[np.ndarray | None]) -> bytes:
    """A PNG of `rows` (given_label, suggested_label, score), in order, with their pictures."""
    figure = Figure(figsize=(6, 1.6))
    if rows.empty:
        axes = figure.add_subplot()
        axes.set_axis_off()
        axes.text(0.5, 0.5, "no likely label errors found", ha="center", va="center", fontsize=12, color="#555555",
                  transform=axes.transAxes)
    else:
        columns = min(COLUMNS, len(rows))
        grid_rows = math.ceil(len(rows) / columns)
        figure = Figure(figsize=(1.8 * columns, 2.3 * grid_rows + 0.4))
        for position, (row, pixels) in enumerate(zip(rows.itertuples(index=False), pictures), start=1):
            axes = figure.add_subplot(grid_rows, columns, position)
            axes.imshow(pixels if pixels is not None else np.full((THUMBNAIL_SIDE, THUMBNAIL_SIDE, 3), 220, np.uint8))
            axes.set_xticks([])
            axes.set_yticks([])
            axes.set_title(f"given {_literal(row.given_label)}\nsuggested {_literal(row.suggested_label)}\n"
                           f"score {float(row.score):.3f}", fontsize=8, color="#8b1a1a")
        figure.suptitle("Likely label errors (most likely first)")
        figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()
