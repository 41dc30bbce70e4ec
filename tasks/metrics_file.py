"""Writes and reads the test metrics in paths.evaluation: metrics.json (the headline figures, a column each in
`dvc exp show`) and per_class.json (the per-class or per-label tables, kept out of DVC's metrics).

metrics.json names every figure for the split it was measured on (`test_accuracy`, `test_macro_f1`): DVC shows a
metric under its bare name, and `accuracy` beside dvclive's `val_accuracy` (and the params `train.*`) could be
taken for anything. In memory the figures keep their plain names (`accuracy`, `macro_f1_ci`), as tasks/scoring
computes them and the gate and the report read them: `write` adds the prefix, `read` takes it off.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks import atomic

HEADLINE_FILE = "metrics.json"
DETAILS_FILE = "per_class.json"
PREFIX = "test_"  # the split of every figure in metrics.json
UNPREFIXED = ("test_images", "task")  # named for the split already; the kind of model (text, not a DVC column)


def file_name(key: str) -> str:
    """The name of a figure in metrics.json: `accuracy` -> `test_accuracy` (`test_images` and `task` as they are)."""
    return key if key in UNPREFIXED else PREFIX + key


def plain_name(name: str) -> str:
    """The inverse of file_name: `test_accuracy` -> `accuracy`."""
    return name if name in UNPREFIXED else name.removeprefix(PREFIX)


def write(output: Path, metrics: dict[str, Any]) -> None:
    """Split `metrics` into its figures (metrics.json) and its tables (per_class.json), each written atomically."""
    atomic.write_json(output / DETAILS_FILE, {key: value for key, value in metrics.items() if isinstance(value, dict)})
    atomic.write_json(output / HEADLINE_FILE, {file_name(key): value for key, value in metrics.items()
                                               if not isinstance(value, dict)})


def plain(values: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's mapping under the plain names (`test_accuracy` -> `accuracy`)."""
    return {plain_name(name): value for name, value in values.items()}


def read(output: Path) -> dict[str, Any]:
    """metrics.json's figures under their plain names (`accuracy`, `macro_f1_ci`); a missing or broken file raises
    (OSError, ValueError), as json does."""
    values = json.loads((output / HEADLINE_FILE).read_text(encoding="utf-8"))
    if not isinstance(values, dict):
        raise ValueError(f"{output / HEADLINE_FILE}: expected a JSON object of metrics, got {type(values).__name__}")
    return plain(values)
