"""Writes the test metrics into paths.evaluation: metrics.json (the headline figures, a column each in `dvc exp show`)
and per_class.json (the per-class or per-label tables, kept out of DVC's metrics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks import atomic

HEADLINE_FILE = "metrics.json"
DETAILS_FILE = "per_class.json"


def write(output: Path, metrics: dict[str, Any]) -> None:
    """Split `metrics` into its figures (metrics.json) and its tables (per_class.json), each written atomically."""
    atomic.write_json(output / DETAILS_FILE, {key: value for key, value in metrics.items() if isinstance(value, dict)})
    atomic.write_json(output / HEADLINE_FILE, {key: value for key, value in metrics.items()
                                               if not isinstance(value, dict)})
