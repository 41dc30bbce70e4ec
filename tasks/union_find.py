"""Disjoint sets (union-find) over hashable keys, for grouping near-duplicates and split units; pure computation."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any


class UnionFind:
    """Sets that merge; each set is named by its smallest member under `rank` (the member itself by default)."""

    def __init__(self, rank: Callable[[Any], Any] | None = None) -> None:
        self._parent: dict[Hashable, Hashable] = {}
        self._rank = rank or (lambda member: member)

    def find(self, member: Hashable) -> Hashable:
        """The name of the set holding `member` (a new set of its own when unseen)."""
        parent = self._parent.setdefault(member, member)
        while parent != member:
            grandparent = self._parent[parent]
            self._parent[member] = grandparent  # path halving: later finds are shorter
            member, parent = parent, grandparent
        return member

    def union(self, first: Hashable, second: Hashable) -> None:
        first_root, second_root = self.find(first), self.find(second)
        if first_root != second_root:
            smaller, larger = sorted((first_root, second_root), key=self._rank)
            self._parent[larger] = smaller
