"""Perceptual hashes, and groups of images whose hashes are within a Hamming distance; pure computation, no I/O."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image

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


def _values(hashes: Iterable[str]) -> np.ndarray:
    """The hex hashes as uint64s: from the characters' bytes in numpy when all are 16 digits (no Python int each)."""
    from tasks import joins  # pandas and pyarrow: imported by the main process only (examine's workers import this)

    digits = joins.fixed_width(joins.text(hashes))
    if digits.dtype.itemsize == HASH_BITS // 4 and len(digits):
        codes = digits.view(np.uint8).reshape(len(digits), HASH_BITS // 4)
        nibbles = np.where(codes <= ord("9"), codes - ord("0"), (codes | 0x20) - ord("a") + 10).astype(np.uint64)
        if (nibbles < 16).all():
            return (nibbles << np.arange(HASH_BITS - 4, -1, -4, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
    return np.array([int(text, 16) for text in digits.astype(str).tolist()], dtype=np.uint64)


def group_near_duplicates(hashes: Iterable[str], max_distance: int) -> np.ndarray:
    """Return, for each hex hash, the index of the first member of its group (itself when it has no near twin).

    Equal hashes join without comparing. Two distinct hashes within `max_distance` bits must agree exactly on at
    least one of `max_distance + 1` blocks (pigeonhole), so only hashes sharing a block value are compared, a
    bucket at a time with numpy: near-linear for real collections (a second for 10^5 hashes). The groups are the
    connected components of the pairs found (scipy), so no Python work is done per image.
    """
    from scipy import sparse
    from scipy.sparse import csgraph

    values = _values(hashes)
    count = len(values)
    if not count:
        return np.zeros(0, dtype=np.int64)
    unique, first_index, inverse = np.unique(values, return_index=True, return_inverse=True)
    repeated = np.flatnonzero(first_index[inverse] != np.arange(count))
    pairs = [(first_index[inverse[repeated]], repeated)]
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
            near = np.flatnonzero(same_bucket & (np.bitwise_count(sorted_values[step:] ^ sorted_values[:-step])
                                                 <= max_distance))
            pairs.append((owners[near], owners[near + step]))
    first = np.concatenate([pair[0] for pair in pairs]).astype(np.int64)
    second = np.concatenate([pair[1] for pair in pairs]).astype(np.int64)
    graph = sparse.coo_matrix((np.ones(len(first), dtype=np.int8), (first, second)), shape=(count, count))
    _, component = csgraph.connected_components(graph, directed=False)
    leaders = np.full(component.max() + 1, count, dtype=np.int64)
    np.minimum.at(leaders, component, np.arange(count))
    return leaders[component]
