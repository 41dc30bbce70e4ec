"""Absolute locations of every file the stages exchange, derived from params.yaml's `paths` and the project folder."""

from __future__ import annotations

import os
from pathlib import Path

from tasks.params import PathsParams


class Paths:
    """Absolute locations of every file the stages exchange, derived from `paths` and one root folder."""

    def __init__(self, params: PathsParams, root: Path) -> None:
        self.root = root
        self.demo = root / params.demo
        self.raw = root / params.raw
        self.interim = root / params.interim
        self.processed = root / params.processed
        self.models = root / params.models
        self.reports = root / params.reports

    @property
    def manifest(self) -> Path:
        return self.interim / "manifest.parquet"

    @property
    def ingest_cache(self) -> Path:
        return self.interim / "ingest_cache.parquet"

    @property
    def quarantine(self) -> Path:
        return self.reports / "quarantine.csv"

    @property
    def validation(self) -> Path:
        return self.reports / "validation"

    @property
    def validation_verdict(self) -> Path:
        """Written by validate only when the data passed; what preprocess depends on (no timestamps inside)."""
        return self.interim / "validation.json"

    @property
    def candidate(self) -> Path:
        return self.models / "candidate"

    @property
    def training_reports(self) -> Path:
        return self.reports / "training"

    @property
    def evaluation(self) -> Path:
        return self.reports / "evaluation"

    @property
    def gate(self) -> Path:
        return self.evaluation / "gate.json"

    @property
    def production(self) -> Path:
        return self.models / "production"

    @property
    def registry(self) -> Path:
        """Every model ever promoted, by version, and history.jsonl: what was promoted or rolled back, when, why."""
        return self.models / "registry"

    def resolve(self, path: str | Path) -> Path:
        """A path from params (absolute, or relative to the project root) as an absolute path."""
        path = Path(os.path.expanduser(str(path)))
        return path if path.is_absolute() else self.root / path
