"""The settings of a predict call, their defaults and their choices: the one definition that the Python caller
(tasks/predict/classify.py), the classify flow and the `imgpipe predict` command read. Reads and writes nothing."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.config import ArgumentError
from tasks.engines.names import AUTO, ENGINES, PRECISIONS
from tasks.params import IngestParams

DEFAULT_MAX_PIXELS: int = IngestParams.model_fields["max_pixels"].default  # as ingest.max_pixels
ENGINE_CHOICES = (AUTO, *ENGINES)  # auto: the fastest engine and precision that passed parity (engine.choose)
PRECISION_CHOICES = (AUTO, *PRECISIONS)
DEFAULT_OUT = "predictions.parquet"
DEFAULT_WORKERS = 1  # this process, decoding on every core; more: a Dask cluster of that many processes
# Under this many files per worker, a local cluster's start (seconds, and the model loaded again by every worker)
# outweighs what it saves: 372 files took 3x longer on 2 workers than in one process (issue 16). A conservative
# estimate, not a measured crossover.
MIN_FILES_PER_WORKER = 1000


@dataclass(frozen=True)
class PredictOptions:
    top_k: int = 3
    batch_size: int = 64
    chunk_size: int = 1024  # files per committed part: what a killed run can lose
    max_pixels: int = DEFAULT_MAX_PIXELS
    engine: str = AUTO  # one of ENGINE_CHOICES (tasks/engines/engine.py); prepare() resolves auto
    precision: str = AUTO  # one of PRECISION_CHOICES
    follow_file_links: bool = False  # read links to files wherever they point (a trust decision; folder links never)

    def check(self) -> None:
        for name in ("top_k", "batch_size", "chunk_size", "max_pixels"):
            if getattr(self, name) < 1:
                raise ArgumentError(f"`{name}` must be >= 1, got {getattr(self, name)}")
