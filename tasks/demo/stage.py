"""Demo data: reads scikit-learn's bundled handwritten digits, writes them as PNG files in one folder per class."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from tasks import atomic
from tasks.config import load_config

logger = logging.getLogger(__name__)


def run(target: Path) -> int:
    """Write the 1,797 8x8 digit scans as grayscale PNGs under target/<digit>/; return how many were written."""
    digits = load_digits()
    # the scans hold 17 grey levels (0 to 16); stretch them to the full 8-bit range
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    with atomic.atomic_directory(target) as building:
        for index, (image, label) in enumerate(zip(pixels, digits.target)):
            folder = building / str(label)
            folder.mkdir(exist_ok=True)
            Image.fromarray(image, mode="L").save(folder / f"digit_{index:04d}.png", optimize=False)
    logger.info("wrote %d demo images to %s", len(pixels), target)
    return len(pixels)


NOT_USED_FILE = "NOT_USED.txt"


def stand_in(target: Path, source: Path) -> None:
    """When ingest.source is the user's own data: no demo images, only a note (DVC wants the output to exist)."""
    with atomic.atomic_directory(target) as building:
        (building / NOT_USED_FILE).write_text(
            f"No demo images: ingest.source is {source}, not this folder. Set ingest.source back to this folder's "
            "path to have the demo written here.\n", encoding="utf-8")
    logger.info("demo data not written: ingest.source is %s, not the demo folder %s", source, target)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, paths = load_config()
    source = paths.resolve(config.ingest.source)
    if source.resolve() == paths.demo.resolve():
        run(paths.demo)
    else:
        stand_in(paths.demo, source)
