"""Prediction's name for tasks/safe_open.py (folders below a root opened without following links); reads and
writes nothing itself. New code imports tasks.safe_open."""

from __future__ import annotations

from tasks.safe_open import FolderError, Folders, split

__all__ = ["FolderError", "Folders", "split"]
