"""Runs dvc.yaml stages and pushes through the DVC command line; reads dvc.yaml, writes what the stages write."""

from __future__ import annotations

import collections
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from tasks import dvc_command, native_noise

_SKIPPED = re.compile(r"Stage '(?P<name>[^']+)' didn't change, skipping")
_RESTORED = re.compile(r"Stage '(?P<name>[^']+)' is cached - skipping run")
_RAN = re.compile(r"Running stage '(?P<name>[^']+)'")
# TensorFlow's start-up chatter and CUDA probes in the stages' output: kept out of the run's log
_TENSORFLOW_NOISE = native_noise.NATIVE_NOISE
# DVC's advice after each stage, which imgpipe follows itself (`imgpipe run --commit`, the push at the end)
_DVC_HINTS = ("To track the changes with git, run:", "git add ", "To enable auto staging, run:",
              "dvc config core.autostage true", "Use `dvc push` to send your updates to remote storage.")
# a stage's own log line, `INFO tasks.train.stage: message`: relayed at its level without a second prefix
_STAGE_LOG_LINE = re.compile(r"^(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: (?P<message>.*)$")
_DVC_NOISE = ("ERROR: failed to reproduce", "Having any troubles?", "ERROR: failed to run", "Traceback (most recent")


class StageFailed(RuntimeError):
    """A stage's command exited with an error; the message holds the stage's own last words."""

    def __init__(self, message: str, stage: str, error_type: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.error_type = error_type  # the stage's exception class, e.g. tasks.validate.ValidationFailed

    def __reduce__(self):  # keep the extra fields when Prefect pickles the exception
        return (type(self), (str(self), self.stage, self.error_type))


class DataInvalid(StageFailed):
    """The validate stage refused the data: retrying cannot help, the source or the params must change."""


class TransientError(RuntimeError):
    """A failure worth retrying after a pause, such as a DVC remote that did not answer."""


@dataclass(frozen=True)
class StageResult:
    name: str
    # "ran"; "unchanged" (ran, as an always-changed stage does, and wrote the same outputs); "skipped" (its deps,
    # params and code unchanged); or "restored" (outputs taken from DVC's run cache)
    status: str
    seconds: float


def _locked_outputs(root: Path, name: str) -> dict[str, str] | None:
    """The output hashes dvc.lock records for a stage (None when it records none)."""
    lock_file = root / "dvc.lock"
    if not lock_file.is_file():
        return None
    stage = ((yaml.safe_load(lock_file.read_text(encoding="utf-8")) or {}).get("stages") or {}).get(name) or {}
    outputs = stage.get("outs")
    return {item["path"]: item.get("md5", "") for item in outputs} if outputs else None


def stage_names(root: Path) -> list[str]:
    """The stages of dvc.yaml, in the order they are written there."""
    path = root / "dvc.yaml"
    if not path.is_file():
        raise ValueError(f"{path}: not found; run from the imgpipe project folder or pass --repo")
    return list((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages", {}))


def _dvc(root: Path, arguments: list[str], log: Callable[[str], None], keep: int = 60) -> tuple[int, list[str]]:
    """Run `dvc ARGUMENTS` in root, passing each output line to `log`; return the exit code and the last lines."""
    last_lines: collections.deque[str] = collections.deque(maxlen=keep)

    def on_line(line: str) -> None:
        if line and not _TENSORFLOW_NOISE.match(line):
            last_lines.append(line)
            if not line.strip().startswith(_DVC_HINTS):
                log(line)

    code = dvc_command.stream(root, arguments, on_line)
    return code, list(last_lines)


def relay(logger: logging.Logger | logging.LoggerAdapter) -> Callable[[str], None]:
    """A `log` for the lines of DVC and its stages: a stage's own log line at its level, its prefix taken off (the
    logger adds its own), anything else (DVC's lines, a traceback) at INFO."""
    def log(line: str) -> None:
        match = _STAGE_LOG_LINE.match(line)
        if match:
            logger.log(getattr(logging, match["level"]), "%s", match["message"])
        else:
            logger.info("%s", line)

    return log


_EXCEPTION_LINE = re.compile(r"^(?P<type>[\w.]*(Error|Exception|Failed|Interrupt|Refused|Busy)\w*): ")


def _error(lines: list[str]) -> tuple[str, str]:
    """The stage's own error and its exception type: the last exception line of its traceback, else its last lines."""
    for index in range(len(lines) - 1, -1, -1):
        match = _EXCEPTION_LINE.match(lines[index])
        if match:
            return match["type"], "\n".join(line for line in lines[index:] if not line.startswith(_DVC_NOISE))
    dvc_errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR:")]
    return "", "\n".join(dvc_errors or lines[-10:])  # DVC itself refused (a missing param, a locked repo)


def _error_message(lines: list[str]) -> str:
    return _error(lines)[1]


# DVC's internal checks that fail without a message, and what they mean for an imgpipe project
_KNOWN_CHECKS = {
    "self.is_in_repo": "an output of the stage is not a path inside the project, or is the project folder itself; "
                       "check the paths section of params.yaml",
}


def _silent_refusal(root: Path, name: str) -> str:
    """DVC's reason for refusing a stage when it gave none: from a dry run (which runs no command) with -v."""
    _, lines = _dvc(root, ["repro", "--single-item", name, "--dry", "-v"], lambda line: None, keep=400)
    start = next((index for index, line in enumerate(lines) if line.startswith("Traceback (most recent")), None)
    # the innermost exception is the first unindented line after the first traceback's start; above it, the code
    # line that raised it (and Python's caret lines, which only underline that code, are left out)
    end = next((index for index in range(start + 1, len(lines)) if not lines[index].startswith(" ")), None) \
        if start is not None else None
    code = [line.strip() for line in lines[start + 1:end] if line.strip().strip("^~ ")] if end else []
    if not code:
        return f"DVC gave no reason (`dvc repro --single-item {name} -v` shows its traceback)"
    exception, code_line = lines[end].strip(), code[-1]
    where = code[-2] if len(code) >= 2 and code[-2].startswith("File ") else ""
    meaning = next((text for check, text in _KNOWN_CHECKS.items() if check in code_line), "")
    return (f"DVC refused it without a message: its check `{code_line}` failed ({exception}; {where})"
            + (f": {meaning}" if meaning else ""))


def repro_stage(root: Path, name: str, log: Callable[[str], None]) -> StageResult:
    """Reproduce one stage through DVC (skipped when its deps, params and code are unchanged)."""
    started = time.perf_counter()
    outputs_before = _locked_outputs(root, name)
    code, lines = _dvc(root, ["repro", "--single-item", name], log)
    seconds = time.perf_counter() - started
    if code != 0:
        error_type, message = _error(lines)
        if not error_type and message.rstrip().endswith(":"):  # "failed to reproduce 'ingest': " and no more
            message = f"{message.rstrip()} {_silent_refusal(root, name)}"
        failure = DataInvalid if error_type.endswith("ValidationFailed") else StageFailed
        raise failure(f"stage '{name}' failed: {message}", name, error_type)
    text = "\n".join(lines)
    if _RAN.search(text):
        status = "unchanged" if outputs_before is not None and _locked_outputs(root, name) == outputs_before else "ran"
    elif _RESTORED.search(text):
        status = "restored"
    elif _SKIPPED.search(text):
        status = "skipped"
    else:
        status = "ran"
    return StageResult(name, status, seconds)


def always_changed(root: Path) -> set[str]:
    """The stages dvc.yaml marks `always_changed` (ingest: its own scan decides what changed)."""
    stages = (yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8")) or {}).get("stages", {})
    return {name for name, stage in stages.items() if (stage or {}).get("always_changed")}


def up_to_date(root: Path, stages: list[str]) -> bool:
    """Whether DVC finds these stages' deps, params, code and outputs unchanged: one `dvc status` for them all."""
    if not stages:
        return True
    code, _ = _dvc(root, ["status", "--quiet", *stages], lambda line: None)
    return code == 0


def has_remote(root: Path) -> bool:
    code, lines = _dvc(root, ["remote", "list"], lambda line: None)
    return code == 0 and any(line.strip() for line in lines)


def push(root: Path, log: Callable[[str], None]) -> None:
    """Push every tracked output to the default DVC remote."""
    code, lines = _dvc(root, ["push"], log)
    if code != 0:
        raise TransientError(f"dvc push failed: {_error_message(lines)}")


def track(root: Path, targets: list[Path], log: Callable[[str], None]) -> None:
    """Version folders that no stage writes (the production model, the registry) with `dvc add`."""
    code, lines = _dvc(root, ["add", *[str(target.relative_to(root)) for target in targets]], log)
    if code != 0:
        raise TransientError(f"dvc add failed: {_error_message(lines)}")


def commit(root: Path, stage: str, log: Callable[[str], None]) -> None:
    """Record a stage's current outputs in dvc.lock (after they were changed outside `dvc repro`, as gc does)."""
    code, lines = _dvc(root, ["commit", "--force", stage], log)
    if code != 0:
        raise StageFailed(f"dvc commit {stage} failed: {_error_message(lines)}", stage, "")


def collect_garbage(root: Path, log: Callable[[str], None]) -> None:
    """Drop from DVC's cache what neither the workspace nor any commit, branch, tag or experiment names."""
    code, lines = _dvc(root, ["gc", "--workspace", "--all-commits", "--all-branches", "--all-tags",
                              "--all-experiments", "--force"], log)
    if code != 0:
        raise StageFailed(f"dvc gc failed: {_error_message(lines)}", "gc", "")
