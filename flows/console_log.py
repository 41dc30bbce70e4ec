"""How the `imgpipe` command's log lines look: one short prefix per line (time, the stage or step, the level when it
is not INFO); Prefect's routine "Finished in state Completed()" lines, and tracebacks of errors whose message says
it all, are left out. Writes to stderr; for served runs, which Prefect's runner starts in processes of their own, it
writes a Prefect logging configuration file (`served_runs_logging`) that gives them the same lines."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path

_ROUTINE = ("Finished in state Completed()",)
# what the engine of a served run says when the runner cancels it (serve stopping, or a cancel in Prefect's UI): it
# is recorded Cancelled, so a crash and a run "Finished" while "Running" would only mislead; the runner's routine lines
_SERVED_NOISE = re.compile(r"Crash detected! Execution was aborted by a termination signal\.?|"
                           r"Finished in state Crashed\('Execution was aborted by a termination signal\.'\)|"
                           r"Finished in state Running\(\)|Execution of flow run '[^']*' was terminated\.|"
                           r"Downloading flow code from storage at .*")
_SERVED_IN_PLAIN_WORDS = (
    (re.compile(r"Flow run was cancelled\."), "run cancelled: its stages were stopped; the next run redoes what this "
                                              "one left unfinished"),
    (re.compile(r"Aborted submission of flow run '([^']*)': Server returned a non-pending state 'CANCELLED'"),
     r"scheduled run \1 not started: cancelled, since a run was in flight (one run at a time)"),
)
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


def served_run_lines(record: logging.LogRecord) -> bool:
    """A filter for serve and its runs: Prefect's lines about a run that serve cancelled or never started, in plain
    words (the run is recorded Cancelled); its routine lines left out."""
    message = record.getMessage()
    if message in _ROUTINE or _SERVED_NOISE.fullmatch(message):
        return False
    for pattern, plain in _SERVED_IN_PLAIN_WORDS:
        if pattern.fullmatch(message):
            record.msg, record.args = pattern.sub(plain, message), ()
    return True


class ServedRunFilter(logging.Filter):
    """`served_run_lines` as a filter class, for a logging configuration file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return served_run_lines(record)


def configure(level: int = logging.INFO, rewrite: Callable[[str], str] | None = None, served: bool = False) -> None:
    """One handler on the root logger for everything, Prefect's loggers included (they propagate to it here); each
    message passed through `rewrite` when one is given. served: for `imgpipe serve` (`served_run_lines`)."""
    root = logging.getLogger()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Prefect API call otherwise
    if root.handlers:  # configured already (a test's log capture, an embedding program): leave it, as basicConfig
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ConsoleFormatter(rewrite))
    handler.addFilter(served_run_lines if served else _not_routine)
    root.addHandler(handler)
    root.setLevel(level)


def served_runs_logging(folder: Path) -> Path:
    """Write a Prefect logging configuration that gives the processes of served runs this module's lines (as
    `configure(served=True)`); its path, for PREFECT_LOGGING_SETTINGS_PATH. Prefect's own configuration otherwise,
    read from the installed Prefect, so that its API log handlers (the run's logs in the UI) stay as they are."""
    import yaml
    from prefect.logging.configuration import DEFAULT_LOGGING_SETTINGS_PATH

    from tasks import atomic

    config = yaml.safe_load(Path(DEFAULT_LOGGING_SETTINGS_PATH).read_text(encoding="utf-8"))
    config.setdefault("formatters", {})["imgpipe"] = {"()": f"{__name__}.ConsoleFormatter"}
    config.setdefault("filters", {})["imgpipe"] = {"()": f"{__name__}.ServedRunFilter"}
    config["handlers"]["console"] = {"class": "logging.StreamHandler", "level": 0, "formatter": "imgpipe",
                                     "filters": ["imgpipe"], "stream": "ext://sys.stderr"}
    config.setdefault("root", {})["level"] = "INFO"  # as `imgpipe run`: every INFO line of the run, ours included
    config["loggers"]["httpx"] = {"level": "WARNING"}
    path = folder / "served-runs-logging.yml"
    atomic.write_text(path, yaml.safe_dump(config, sort_keys=False), keep_if_same=True)
    return path
