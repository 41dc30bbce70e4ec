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


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _, paths = load_config()
    run(paths.demo)
