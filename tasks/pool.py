"""Runs a function over many items in spawned worker processes, results in the order given; reads and writes nothing.

The one process pool of imgpipe (ingest's checks, preprocessing's decode, prediction's decode). Kept free of
TensorFlow and pandas on purpose: worker processes import this module, and must start fast.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# Under this many items a call runs in this process: starting a worker (a new interpreter importing Pillow and
# NumPy) costs about 0.3-0.5 s of CPU, which decoding 256 small images (1-3 ms each) on two cores does not repay.
SERIAL_BELOW = 256
MAX_BATCH = 64  # items per task sent to a worker: fewer round trips, yet a slow batch holds up little
IN_FLIGHT_PER_WORKER = 3  # tasks submitted ahead per worker: keeps workers busy, memory flat


def available_cores() -> int:
    """The cores this process may run on (fewer than os.cpu_count() in a container or under taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_count(requested: int) -> int:
    """`requested` processes, or one per available core for 0."""
    if requested < 0:
        raise ValueError(f"workers must be >= 0 (0: one per core), got {requested}")
    return requested or available_cores()


def batch_size(items: int, workers: int) -> int:
    """Items per task: about 8 tasks per worker, at most MAX_BATCH, so work spreads evenly and IPC stays cheap."""
    return max(1, min(MAX_BATCH, items // (workers * 8)))


def _exit_with_parent(parent_id: int) -> None:
    """In a worker: end when the parent process is gone (killed with SIGKILL, say) instead of lingering."""

    def watch() -> None:
        while os.getppid() == parent_id:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class ProcessPool:
    """`function(item)` over `workers` spawned processes (1: in this process), results in order.

    Spawned, never forked: the caller may hold threads (TensorFlow, Prefect) that a forked child would inherit
    locked. At most IN_FLIGHT_PER_WORKER tasks per worker are pending, so memory stays flat however many items
    are fed in; workers end with their parent even when it is killed.
    """

    def __init__(self, workers: int = 0, warm: bool = False) -> None:
        self.workers = worker_count(workers)
        self.warm = warm  # start every worker on entry (while the caller loads a model, say)
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> ProcessPool:
        if self.workers > 1:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with_parent, initargs=(os.getpid(),))
            if self.warm:
                for _ in range(self.workers):
                    self._executor.submit(os.getpid)
        return self

    def __exit__(self, *exception: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def imap(self, function: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[Result]:
        """Yield function(item) for each item, in the order given; an exception in a worker is raised here."""
        if self._executor is None:
            yield from map(function, items)
            return
        in_flight: collections.deque[Future[Result]] = collections.deque()
        window = IN_FLIGHT_PER_WORKER * self.workers
        for item in items:
            in_flight.append(self._executor.submit(function, item))
            if len(in_flight) >= window:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


def ordered_map(function: Callable[[Item], Result], items: Sequence[Item], workers: int = 0,
                scheduler: str | None = None, serial_below: int = SERIAL_BELOW) -> Iterator[Result]:
    """Yield function(item) for each item in order: in this process for fewer than `serial_below` items, else
    batched over a pool of `workers` processes, or over the Dask cluster at `scheduler` (its workers must import this
    project and see the same files). The results are the same whichever runs them."""
    workers = worker_count(workers)
    if scheduler is None and (workers == 1 or len(items) < serial_below):
        yield from map(function, items)
        return
    if scheduler is not None:
        yield from _dask_map(function, items, scheduler)
        return
    size = batch_size(len(items), workers)
    batches = (list(items[start:start + size]) for start in range(0, len(items), size))
    with ProcessPool(workers) as pool:
        for results in pool.imap(_BatchCall(function), batches):
            yield from results


def _dask_map(function: Callable[[Item], Result], items: Sequence[Item], scheduler: str) -> Iterator[Result]:
    """ordered_map over a Dask cluster: batches submitted a window ahead, gathered in order."""
    from distributed import Client  # imported only when asked for: a cluster is optional

    with Client(scheduler, set_as_default=False) as client:
        workers = max(1, len(client.scheduler_info()["workers"]))
        size = batch_size(len(items), workers)
        call, in_flight = _BatchCall(function), collections.deque()
        for start in range(0, len(items), size):
            in_flight.append(client.submit(call, list(items[start:start + size]), pure=False))
            if len(in_flight) >= IN_FLIGHT_PER_WORKER * workers:
                yield from in_flight.popleft().result()
        while in_flight:
            yield from in_flight.popleft().result()


class _BatchCall:
    """A picklable `function` applied to each item of a batch."""

    def __init__(self, function: Callable[[Any], Any]) -> None:
        self.function = function

    def __call__(self, batch: list[Any]) -> list[Any]:
        return [self.function(item) for item in batch]
