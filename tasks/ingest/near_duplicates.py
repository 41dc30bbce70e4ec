"""Perceptual hashes, and groups of images whose hashes are within a Hamming distance; pure computation, no I/O."""

from __future__ import annotations

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
    middle = np.partition(low.ravel(), (31, 32))[31:33]  # the median of 64 values, without np.median's overhead
    return np.packbits(low > middle.mean()).tobytes().hex()


def group_near_duplicates(hashes: Sequence[str], max_distance: int) -> list[int]:
    """Return, for each hex hash, the index of the first member of its group (itself when it has no near twin).

    Equal hashes join without comparing. Two distinct hashes within `max_distance` bits must agree exactly on at
    least one of `max_distance + 1` blocks (pigeonhole), so only hashes sharing a block value are compared, a
    bucket at a time with numpy: near-linear for real collections (a second for 10^5 hashes).
    """
    groups = UnionFind()
    if not hashes:
        return []
    values = np.array([int(text, 16) for text in hashes], dtype=np.uint64)
    unique, first_index, inverse = np.unique(values, return_index=True, return_inverse=True)
    for index in np.flatnonzero(first_index[inverse] != np.arange(len(values))):
        groups.union(int(first_index[inverse[index]]), int(index))
    block_count = min(max_distance + 1, HASH_BITS) if max_distance > 0 else 0
    width = HASH_BITS // max(block_count, 1)
    for block in range(block_count):
        bits = width if block < block_count - 1 else HASH_BITS - width * block
        keys = (unique >> np.uint64(width * block)) & np.uint64((1 << bits) - 1)
        order = np.argsort(keys, kind="stable")
        sorted_keys, sorted_values, owners = keys[order], unique[order], first_index[order]
        for step in range(1, len(order)):  # each element against the one `step` places on, in its bucket
            same_bucket = sorted_keys[step:] == sorted_keys[:-step]
            if not same_bucket.any():  # sorted: no bucket holds more than `step` members
                break
            near = same_bucket & (np.bitwise_count(sorted_values[step:] ^ sorted_values[:-step]) <= max_distance)
            for position in np.flatnonzero(near):
                groups.union(int(owners[position]), int(owners[position + step]))
    return [groups.find(index) for index in range(len(hashes))]
