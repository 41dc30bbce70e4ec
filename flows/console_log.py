"""How the `imgpipe` command's log lines look: one short prefix per line (time, the stage or step, the level when it
is not INFO); Prefect's routine "Finished in state Completed()" lines, and tracebacks of errors whose message says
it all, are left out. Writes to stderr."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from tasks import native_noise

_ROUTINE = ("Finished in state Completed()",)
NATIVE_NOISE = native_noise.NATIVE_NOISE  # TensorFlow's C++ start-up lines, which the stage output relay drops
filter_native_noise = native_noise.filter_stderr
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


