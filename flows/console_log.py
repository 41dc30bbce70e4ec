"""How the `imgpipe` command's log lines look: one short prefix per line (time, the stage or step, the level when it
is not INFO); Prefect's routine "Finished in state Completed()" lines, and tracebacks of errors whose message says
it all, are left out. Writes to stderr."""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable

_ROUTINE = ("Finished in state Completed()",)
# TensorFlow's start-up lines from absl, which TF_CPP_MIN_LOG_LEVEL cannot silence, and its CUDA probes, which print
# errors on a machine without a GPU; written by C++ straight to file descriptor 2
NATIVE_NOISE = re.compile(r"^(?:[IW]\d{4} |WARNING: All log messages before absl|"
                          r"E\d{4} .*(?:cuInit|cuda|cuDNN|cuFFT|cuBLAS|CUDA))")
FORMAT_WIDTH = 10  # the stage names (preprocess is the longest) line up


class ConsoleFormatter(logging.Formatter):
    """`12:03:05 train      | train epoch 3/30 (4.1 s; ...): ...`, `12:03:05 gate       | WARNING ...`; each message
    passed through `rewrite` when one is given (the command's spelling of the settings a message names)."""

    def __init__(self, rewrite: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self.rewrite = rewrite

    def format(self, record: logging.LogRecord) -> str:
        where = getattr(record, "task_name", None) or getattr(record, "flow_name", None)
        if where in (None, "<unknown>"):
            where = record.name.removeprefix("tasks.").removeprefix("flows.").split(".")[0]
        level = "" if record.levelno == logging.INFO else f"{record.levelname} "
        time = self.formatTime(record, "%H:%M:%S")
        text = f"{time} {str(where)[:24]:<{FORMAT_WIDTH}} | {level}{self._message(record)}"
        if record.exc_info and record.levelno >= logging.ERROR and not _explained(record.exc_info[1]):
            text += "\n" + self.formatException(record.exc_info)
        return text

    def _message(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return self.rewrite(message) if self.rewrite else message


def _explained(error: BaseException | None) -> bool:
    """An error whose message says it all (a bad param, a failed stage with its own last words): the command ends
    with that message, so a traceback through Prefect's engine would only bury it."""
    return isinstance(error, ValueError) or type(error).__module__.startswith(("flows.", "tasks."))


def _not_routine(record: logging.LogRecord) -> bool:
    return record.getMessage() not in _ROUTINE


def configure(level: int = logging.INFO, rewrite: Callable[[str], str] | None = None) -> None:
    """One handler on the root logger for everything, Prefect's loggers included (they propagate to it here); each
    message passed through `rewrite` when one is given."""
    root = logging.getLogger()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call otherwise
    if root.handlers:  # configured already (a test's log capture, an embedding program): leave it, as basicConfig
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ConsoleFormatter(rewrite))
    handler.addFilter(_not_routine)
    root.addHandler(handler)
    root.setLevel(level)


def filter_native_noise() -> None:
    """Route file descriptor 2 through a filter that drops NATIVE_NOISE lines (TensorFlow writes them from C++,
    below Python's sys.stderr); Python's own output (logging, tracebacks) goes to the real stderr directly."""
    if os.name != "posix" or getattr(filter_native_noise, "original", None) is not None:
        return
    if sys.stderr is not sys.__stderr__:  # captured (a test) or redirected by an embedding program: leave it
        return
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = open(original, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
    filter_native_noise.original = original

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not NATIVE_NOISE.match(line.decode("utf-8", "replace")):
                    os.write(original, line)

    forwarding = threading.Thread(target=pump, name="native-stderr-filter", daemon=True)
    # started with SIGINT and SIGTERM blocked, which it inherits: it must never be the thread that takes them
    # (serve takes Ctrl-C in a thread of its own; flows/deploy.py)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        forwarding.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def restore() -> None:  # at exit: give fd 2 back, and let the filter pass on what it still holds
        os.dup2(original, 2)
        forwarding.join(timeout=1.0)

    atexit.register(restore)
