"""Runs the DVC command line (`python -m dvc` of this interpreter) in a project: the one way the flows and the tune
stage call DVC. Writes what the DVC command writes.

`stream` relays the output line by line and runs DVC in a process group of its own, so that an interrupted caller
stops DVC and the stage it runs, not only itself; `run` collects the output through temporary files, for a command
(`dvc queue start`) that leaves a worker behind holding its output open.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tasks import kill_point

STOP_GRACE_SECONDS = 10  # an interrupted DVC (and the stage it runs) gets this long to stop after SIGTERM


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """For DVC and the stages it runs: `python` is this interpreter, whatever PATH the caller had."""
    values = dict(os.environ)
    values["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), values.get("PATH", "")])
    values["IMGPIPE_PYTHON"] = sys.executable  # what tasks/bin/python, the stages' interpreter, runs
    values.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    values["PYTHONUNBUFFERED"] = "1"
    return values | (extra or {})


def command(arguments: list[str]) -> list[str]:
    return [sys.executable, "-m", "dvc", *arguments]


def stream(root: Path, arguments: list[str], on_line: Callable[[str], None]) -> int:
    """`dvc ARGUMENTS` in root, each output line (stderr with stdout, right-stripped) passed to `on_line`; the exit
    code. Ctrl-C, a cancelled run or a stop signal stops DVC's whole process group before it is raised on."""
    process = subprocess.Popen(command(arguments), cwd=root, env=environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
    assert process.stdout is not None
    kill_point.reached(f"dvc {arguments[0]}", process.pid)
    try:
        for line in process.stdout:
            on_line(line.rstrip())
        process.wait()
    except BaseException:  # leave no stage running on its own
        stop_group(process)
        raise
    finally:
        process.stdout.close()
    return process.returncode


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group of `process` (DVC and the stage it runs), then SIGKILL to what is left."""
    for signal_number in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, signal_number)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            pass


def run(root: Path, arguments: list[str], extra_environment: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """`dvc ARGUMENTS` in root, its output collected; a failure raises RuntimeError with DVC's own error lines.

    Output goes through temporary files, not pipes: `dvc queue start` leaves a worker behind that inherits them,
    and reading a pipe to its end would wait for that worker to finish the whole queue.
    """
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        code = subprocess.run(command(arguments), cwd=root, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                              env=environment(extra_environment), check=False).returncode
        stdout.seek(0)
        stderr.seek(0)
        completed = subprocess.CompletedProcess(command(arguments), code, stdout.read().decode(errors="replace"),
                                                stderr.read().decode(errors="replace"))
    if check and completed.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(arguments[:3])} failed: {error_lines(completed)}")
    return completed


def error_lines(completed: subprocess.CompletedProcess[str]) -> str:
    """DVC's ERROR lines of a finished command (its last lines when it wrote none)."""
    lines = (completed.stderr + completed.stdout).splitlines()
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR")]
    return " ".join(errors or lines[-5:]).strip()
