"""Progress of a long loop: a tqdm bar on a terminal, else a log line every few seconds (count, rate, time left).

A stage under `imgpipe run`, `dvc repro` in CI or a scheduled run writes to a pipe, where a bar is noise and no
bar is silence: there, `bar` logs `ingest: 1,200/5,000 files (24%), 410 files/s, about 9 s left` at most every
`IMGPIPE_PROGRESS_SECONDS` (default 5) seconds, and once at the end.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

DEFAULT_INTERVAL_SECONDS = 5.0
_INTERVAL_VARIABLE = "IMGPIPE_PROGRESS_SECONDS"


def interval_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(_INTERVAL_VARIABLE, DEFAULT_INTERVAL_SECONDS)))
    except ValueError:
        raise ValueError(f"{_INTERVAL_VARIABLE} must be a number of seconds, got "
                         f"{os.environ[_INTERVAL_VARIABLE]!r}") from None


def duration(seconds: float) -> str:
    """`42 s`, `3 min 5 s`, `2 h 10 min`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class LoggedProgress:
    """tqdm's `update` and context manager, as log lines at most every `interval` seconds."""

    def __init__(self, total: int | None, unit: str, description: str, initial: int = 0,
                 logger: logging.Logger | None = None, interval: float | None = None) -> None:
        self.total, self.unit, self.description = total, unit, description
        self.count = self.initial = initial
        self.logger = logger or logging.getLogger(f"tasks.{description}.progress")
        self.interval = interval_seconds() if interval is None else interval
        self.started = self.last_line = time.monotonic()

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        done = self.count - self.initial
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"{self.description}: {self.count:,}"
        if self.total:
            text += f"/{self.total:,} {self.unit}s ({100 * self.count / self.total:.0f}%)"
        else:
            text += f" {self.unit}s"
        text += f", {rate:,.0f} {self.unit}s/s" if rate >= 10 else f", {rate:.2g} {self.unit}s/s"
        if self.total and rate > 0 and self.count < self.total:
            text += f", about {duration((self.total - self.count) / rate)} left"
        return text + f" ({duration(elapsed)} so far)"

    def update(self, count: int = 1) -> None:
        self.count += count
        now = time.monotonic()
        if now - self.last_line >= self.interval and (self.total is None or self.count < self.total):
            self.last_line = now
            self.logger.info("%s", self.line())

    def close(self) -> None:
        if self.count > self.initial and time.monotonic() - self.started >= self.interval:
            self.logger.info("%s", self.line())  # the end of a loop long enough to have reported

    def __enter__(self) -> LoggedProgress:
        return self

    def __exit__(self, *exception: Any) -> None:
        self.close()


def bar(total: int | None, unit: str, description: str, initial: int = 0, show: bool | None = None) -> Any:
    """A progress bar when stderr is a terminal (or `show` is True), else a LoggedProgress; `show` False: neither."""
    if show is False:
        return LoggedProgress(total, unit, description, initial, interval=float("inf"))
    if show or sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, unit=unit, desc=description)
    return LoggedProgress(total, unit, description, initial)
