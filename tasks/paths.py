"""Absolute locations of every file the stages exchange, derived from params.yaml's `paths` and the project folder."""

from __future__ import annotations

import os
from pathlib import Path

from tasks.params import PathsParams


FOLDER_KEYS = ("demo", "raw", "interim", "processed", "embeddings", "models", "reports")
DATA_FOLDER = "data"


class Paths:
    """Absolute locations of every file the stages exchange, derived from `paths` and one root folder.

    imgpipe deletes and replaces what it writes, so every paths.* folder must lie inside the project's data/ folder
    and no two may overlap: a careless `paths.raw: .` is refused here, before anything is written.
    """

    def __init__(self, params: PathsParams, root: Path) -> None:
        self.root = root
        self.demo = root / params.demo
        self.raw = root / params.raw
        self.interim = root / params.interim
        self.processed = root / params.processed
        self.models = root / params.models
        self.reports = root / params.reports
        self.embeddings = root / params.embeddings
        self._check_folders()

    def _check_folders(self) -> None:
        data = (self.root / DATA_FOLDER).resolve()
        folders = {key: getattr(self, key).resolve() for key in FOLDER_KEYS}
        for key, folder in folders.items():
            if folder == data or not folder.is_relative_to(data):
                raise ValueError(f"paths.{key}: {folder} is not inside the project's data folder {data}; imgpipe "
                                 f"replaces and deletes what it writes there, so keep every paths.* folder under "
                                 f"{DATA_FOLDER}/ (a link named data/ may point to a larger disk)")
        for key, folder in folders.items():
            for other, other_folder in folders.items():
                if key != other and folder.is_relative_to(other_folder):
                    raise ValueError(f"paths.{key} ({folder}) lies inside paths.{other} ({other_folder}); give each "
                                     "paths.* key a folder of its own")

    def check_source(self, source: Path, key: str) -> None:
        """Refuse a source folder that overlaps a folder imgpipe writes (the demo folder may be the source)."""
        source = source.resolve()
        for folder_key in FOLDER_KEYS:
            folder = getattr(self, folder_key).resolve()
            if folder_key == "demo" and source == folder:
                continue
            if source.is_relative_to(folder) or folder.is_relative_to(source):
                raise ValueError(f"{key}: {source} overlaps paths.{folder_key} ({folder}), which imgpipe writes; "
                                 f"point {key} at a folder outside {self.root / DATA_FOLDER}'s outputs")

    @property
    def manifest(self) -> Path:
        return self.interim / "manifest.parquet"

    @property
    def ingest_state(self) -> Path:
        """What ingest saw of each source file last time (size, mtime, sha256, verdict): its incremental memory."""
        return self.interim / "ingest_state.parquet"

    @property
    def ingest_summary(self) -> Path:
        return self.interim / "ingest_summary.json"

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
    def data_health(self) -> Path:
        """The health stage's report: likely label errors, near-duplicates, outliers, summary.json."""
        return self.reports / "data_health"

    @property
    def candidate(self) -> Path:
        return self.models / "candidate"

    @property
    def candidate_exports(self) -> Path:
        """The export stage's output: the candidate's exports and engines.json (tasks/export_folder.py), apart from
        the candidate folder that train writes (DVC outputs may not overlap)."""
        return self.models / "candidate_exports"

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
    def test_predictions(self) -> Path:
        """Each test image's actual and predicted labels, exact (the CSV beside it is escaped for spreadsheets)."""
        return self.evaluation / "test_predictions.parquet"

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

    def shown(self, path: str | Path) -> str:
        """A path as files and messages record it: relative to the project root when inside it (a moved or copied
        project then reads the same), absolute otherwise."""
        path = Path(path)
        return path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)
