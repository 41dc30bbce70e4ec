"""Hashes and decodes batches of image files for prediction, over worker processes; reads the files, writes nothing.

Kept free of TensorFlow imports on purpose, like decode_pool: the worker processes import this module. Unlike
decode_pool.decode_all, a file that cannot be read or decoded becomes an error result, never an exception.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from tasks import images
from tasks.decode_pool import available_cores
from tasks.hashing import file_sha256

Tag = TypeVar("Tag")


@dataclass(frozen=True)
class FileJob:
    file: str  # where to read it
    decode: bool  # False for a file whose extension is not an image format's: it is only described
    expected_sha256: str  # an earlier result for these bytes exists: hash only, and decode only if the hash differs


@dataclass(frozen=True)
class DecodeSettings:
    image_size: int
    resize: str
    max_pixels: int


@dataclass(frozen=True)
class FileResult:
    status: str  # "ok", "reused" (hash equal to expected_sha256, not decoded) or "error"
    reason: str
    detail: str
    sha256: str
    bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class BatchResult:
    files: list[FileResult]
    pixels: np.ndarray  # uint8, one image per "ok" result, in order


def read_file(job: FileJob, settings: DecodeSettings) -> tuple[FileResult, np.ndarray | None]:
    """Describe, hash and decode one file (see images.load_rgb_array); any failure is returned, not raised."""
    path = Path(job.file)
    try:
        stat = path.stat()
        sha256 = file_sha256(path) if job.decode else ""
    except OSError as error:
        return FileResult("error", "unreadable", f"cannot read file: {error.strerror or error}", "", 0, 0), None
    described = dict(sha256=sha256, bytes=stat.st_size, mtime_ns=stat.st_mtime_ns)
    if not job.decode:
        detail = f"{path.suffix or 'no extension'} is not one of {', '.join(sorted(images.IMAGE_EXTENSIONS))}"
        return FileResult("error", "unsupported_format", detail, **described), None
    if job.expected_sha256 and job.expected_sha256 == sha256:
        return FileResult("reused", "", "", **described), None
    try:
        pixels = images.load_rgb_array(path, settings.image_size, settings.resize,  # type: ignore[arg-type]
                                       settings.max_pixels)
    except images.ImageError as error:
        detail = error.detail.replace("ingest.max_pixels", "--max-pixels")  # the option that applies here
        return FileResult("error", error.reason, detail, **described), None
    except Exception as error:  # anything else Pillow may raise on a hostile file must not stop the run
        detail = f"cannot decode image: {type(error).__name__}: {error}"
        return FileResult("error", "corrupt", detail, **described), None
    return FileResult("ok", "", "", **described), pixels


def read_batch(jobs: list[FileJob], settings: DecodeSettings) -> BatchResult:
    """read_file for each job; the decoded images stacked into one array (one transfer from a worker)."""
    results, decoded = [], []
    for job in jobs:
        result, pixels = read_file(job, settings)
        results.append(result)
        if pixels is not None:
            decoded.append(pixels)
    size = settings.image_size
    stacked = np.stack(decoded) if decoded else np.zeros((0, size, size, 3), dtype=np.uint8)
    return BatchResult(results, stacked)


def _exit_with_parent(parent_id: int) -> None:
    """In a worker: end when the parent process is gone (killed with SIGKILL, say) instead of lingering."""

    def watch() -> None:
        while os.getppid() == parent_id:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class DecodePool:
    """read_batch over `workers` spawned processes (0: one per core; 1: in this process), results in order.

    At most a few batches per worker are in flight, so memory stays flat however many batches are fed in.
    """

    def __init__(self, settings: DecodeSettings, workers: int = 0) -> None:
        self.settings = settings
        self.workers = workers or available_cores()
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> DecodePool:
        if self.workers > 1:
            context = multiprocessing.get_context("spawn")  # the caller holds TensorFlow's threads: never fork them
            self._executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=context,
                                                 initializer=_exit_with_parent, initargs=(os.getpid(),))
            for _ in range(self.workers):  # start every worker now, while the caller loads its model
                self._executor.submit(os.getpid)
        return self

    def __exit__(self, *exception: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def imap(self, batches: Iterable[tuple[Tag, list[FileJob]]]) -> Iterator[tuple[Tag, BatchResult]]:
        """Yield (tag, result) for each (tag, jobs) in the order given."""
        if self._executor is None:
            for tag, jobs in batches:
                yield tag, read_batch(jobs, self.settings)
            return
        in_flight: collections.deque[tuple[Tag, Future[BatchResult]]] = collections.deque()
        window = 3 * self.workers
        for tag, jobs in batches:
            in_flight.append((tag, self._executor.submit(read_batch, jobs, self.settings)))
            if len(in_flight) >= window:
                done_tag, future = in_flight.popleft()
                yield done_tag, future.result()
        while in_flight:
            done_tag, future = in_flight.popleft()
            yield done_tag, future.result()
