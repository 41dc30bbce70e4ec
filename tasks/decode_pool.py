"""Decodes many image files to uint8 arrays over all cores, in order; reads the files, writes nothing.

Kept free of TensorFlow imports on purpose: worker processes import this module, and must start fast.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from tasks import images

_SERIAL_BELOW = 256  # images; starting worker processes costs more than it saves under this


def available_cores() -> int:
    """The cores this process may run on (fewer than os.cpu_count() in a container or under taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _decode(job: tuple[str, int, str, int]) -> np.ndarray:
    path, image_size, resize_mode, max_pixels = job
    return images.load_rgb_array(Path(path), image_size, resize_mode, max_pixels)  # type: ignore[arg-type]


def decode_all(
    paths: Sequence[Path], image_size: int, resize_mode: str, max_pixels: int, workers: int = 0
) -> Iterator[np.ndarray]:
    """Yield each file's pixels (see images.load_rgb_array) in the order given; errors propagate."""
    jobs = [(str(path), image_size, resize_mode, max_pixels) for path in paths]
    workers = workers or available_cores()
    if workers == 1 or len(jobs) < _SERIAL_BELOW:
        yield from map(_decode, jobs)
        return
    context = multiprocessing.get_context("spawn")  # callers may hold TensorFlow's threads: never fork them
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(_decode, jobs, chunksize=max(1, min(64, len(jobs) // (workers * 8))))
