"""Perceptual hashes, and groups of images whose hashes are within a Hamming distance; pure computation, no I/O."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from PIL import Image

from tasks.union_find import UnionFind

HASH_BITS = 64
# The hash looks at a 32x32 grayscale thumbnail; box-averaging down to about this side first (or decoding a JPEG
# at this scale) makes hashing a photo far cheaper than decoding it.
HASH_INPUT_SIDE = 64
_THUMBNAIL_SIDE = 32
_LOW_FREQUENCIES = 8
# Rows 0..7 of the unnormalised DCT-II matrix over 32 samples (scipy.fftpack.dct's convention).
_DCT_ROWS = 2 * np.cos(np.pi * np.outer(np.arange(_LOW_FREQUENCIES), 2 * np.arange(_THUMBNAIL_SIDE) + 1)
                       / (2 * _THUMBNAIL_SIDE))


def perceptual_hash(image: Image.Image) -> str:
    """The 64-bit DCT perceptual hash of an image as 16 hex digits: imagehash.phash's algorithm, in numpy.

    The 8x8 lowest frequencies of a 32x32 grayscale thumbnail, each bit set when above their median.
    """
    factor = min(image.size) // HASH_INPUT_SIDE
    if factor > 1:
        image = image.reduce(factor)
    side = (_THUMBNAIL_SIDE, _THUMBNAIL_SIDE)
    pixels = np.asarray(image.convert("L").resize(side, Image.Resampling.LANCZOS), dtype=np.float64)
    low = _DCT_ROWS @ pixels @ _DCT_ROWS.T
    return np.packbits(low > np.median(low)).tobytes().hex()


def _blocks(value: int, block_count: int) -> list[tuple[int, int]]:
    width = HASH_BITS // block_count
    blocks = []
    for index in range(block_count):
        bits = width if index < block_count - 1 else HASH_BITS - width * index
        blocks.append((index, (value >> (width * index)) & ((1 << bits) - 1)))
    return blocks


def group_near_duplicates(hashes: Sequence[str], max_distance: int) -> list[int]:
    """Return, for each hex hash, the index of the first member of its group (itself when it has no near twin).

    Equal hashes join without comparing. Two distinct hashes within `max_distance` bits must agree exactly on at
    least one of `max_distance + 1` blocks (pigeonhole), so only hashes sharing a block are compared:
    near-linear for real collections.
    """
    groups = UnionFind()
    first_with_value: dict[int, int] = {}
    for index, text in enumerate(hashes):
        value = int(text, 16)
        if value in first_with_value:
            groups.union(first_with_value[value], index)
        else:
            first_with_value[value] = index
    block_count = min(max_distance + 1, HASH_BITS)
    buckets: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for value, index in first_with_value.items():
        for block in _blocks(value, block_count):
            buckets[block].append((value, index))
    for members in buckets.values():
        for position, (first_value, first) in enumerate(members):
            for second_value, second in members[position + 1:]:
                if (first_value ^ second_value).bit_count() <= max_distance:
                    groups.union(first, second)
    return [groups.find(index) for index in range(len(hashes))]
