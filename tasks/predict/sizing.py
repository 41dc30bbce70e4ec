"""How a folder is cut up for several workers: whether a cluster repays its start, and the chunk size; reads the
folder's listing only (no file is opened).

A local Dask cluster takes seconds to start (more on a busy machine) and each worker loads the model again, so a
small folder is classified faster by one process that decodes on every core. A folder large enough for a
cluster is cut into at least SHARDS_PER_WORKER chunks per worker, so that every worker gets work.
"""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path

from tasks.predict import entries, store
from tasks.predict.options import MIN_FILES_PER_WORKER

SHARDS_PER_WORKER = 4  # a slow shard holds a worker up less when there are several per worker
SMALLEST_CHUNK = 64  # below this, a chunk's overhead (a part file, a commit) outweighs its work

logger = logging.getLogger(__name__)


def count_files(source: Path, out: Path, limit: int) -> int:
    """The entries under `source` that prediction would list, counted up to `limit` (a walk, no file opened)."""
    source, out = source.resolve(), out.resolve()
    listed = entries.plan_rows(source, out, store.state_folder(out))
    return sum(1 for _ in itertools.islice(listed, limit))


def plan_for_workers(files: int, workers: int, chunk_size: int,
                     min_files_per_worker: int = MIN_FILES_PER_WORKER) -> tuple[bool, int]:
    """(whether a local cluster of `workers` is worth starting for `files` files, the chunk size to use)."""
    if workers <= 1 or files < min_files_per_worker * workers:
        return False, chunk_size
    wanted_chunks = SHARDS_PER_WORKER * workers
    return True, min(chunk_size, max(SMALLEST_CHUNK, math.ceil(files / wanted_chunks)))  # never above the asked


def choose(source: Path, out: Path, workers: int, chunk_size: int, cluster_running: bool = False,
           min_files_per_worker: int = MIN_FILES_PER_WORKER) -> tuple[bool, int]:
    """(whether to classify on a cluster, the chunk size) for `workers` workers; says so when one process will do.

    cluster_running: an existing cluster (--scheduler), which costs nothing to start: only the chunk size changes.
    min_files_per_worker: a local cluster is started only for at least this many files per worker (0: always).
    """
    if (workers <= 1 and not cluster_running) or not Path(source).is_dir():  # prepare() says what is wrong
        return cluster_running, chunk_size
    limit = max(min_files_per_worker, SHARDS_PER_WORKER * chunk_size) * max(workers, 1)
    files = count_files(source, out, limit)
    worth_it, sized = plan_for_workers(files, max(workers, 2) if cluster_running else workers, chunk_size,
                                       0 if cluster_running else min_files_per_worker)
    if cluster_running:
        return True, sized
    if not worth_it:
        logger.info("predict: %d files, fewer than %d per worker: too few to repay starting a cluster of %d "
                    "workers; classifying them in this process, decoding on every core (`min_files_per_worker` "
                    "changes that)", files, min_files_per_worker, workers)
    return worth_it, sized
