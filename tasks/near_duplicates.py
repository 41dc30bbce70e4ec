"""Groups images whose perceptual hashes are within a Hamming distance; pure computation, reads and writes nothing."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

HASH_BITS = 64


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, first: int, second: int) -> None:
        first_root, second_root = self.find(first), self.find(second)
        if first_root != second_root:
            self.parent[max(first_root, second_root)] = min(first_root, second_root)


def _blocks(value: int, block_count: int) -> list[tuple[int, int]]:
    width = HASH_BITS // block_count
    blocks = []
    for index in range(block_count):
        bits = width if index < block_count - 1 else HASH_BITS - width * index
        blocks.append((index, (value >> (width * index)) & ((1 << bits) - 1)))
    return blocks


def group_near_duplicates(hashes: Sequence[str], max_distance: int) -> list[int]:
    """Return, for each hex hash, the index of the first member of its group (itself when it has no near twin).

    Two hashes within `max_distance` bits must agree exactly on at least one of `max_distance + 1` blocks
    (pigeonhole), so only hashes sharing a block are compared: near-linear for real collections.
    """
    values = [int(value, 16) for value in hashes]
    groups = _UnionFind(len(values))
    block_count = min(max_distance + 1, HASH_BITS)
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, value in enumerate(values):
        for block in _blocks(value, block_count):
            buckets[block].append(index)
    for members in buckets.values():
        for position, first in enumerate(members):
            for second in members[position + 1:]:
                if groups.find(first) != groups.find(second) and (values[first] ^ values[second]).bit_count() <= max_distance:
                    groups.union(first, second)
    return [groups.find(index) for index in range(len(values))]
