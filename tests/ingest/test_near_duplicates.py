"""The perceptual hash (imagehash's phash, in numpy) and near-duplicate grouping."""

import imagehash
import numpy as np
from PIL import Image

from tasks.ingest.near_duplicates import group_near_duplicates, perceptual_hash
from tests.conftest import make_image, scene


def test_perceptual_hash_is_imagehash_phash():
    generator = np.random.default_rng(4)
    pictures = [scene(), scene(300, seed=1).rotate(20), make_image((90, 90, 200), seed=3, size=200)]
    pictures += [Image.fromarray(generator.integers(0, 255, (50, 40, 3), dtype=np.uint8)) for _ in range(5)]
    for picture in pictures:
        factor = max(1, min(picture.size) // 64)
        assert perceptual_hash(picture) == str(imagehash.phash(picture.reduce(factor)))
    assert group_near_duplicates(["0000000000000000", "000000000000000f", "ffffffffffffffff", "000000000000001f"],
                                 4).tolist() == [0, 0, 2, 0]
