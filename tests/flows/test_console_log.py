"""The log a person reads: one prefix per line, a stage's own level kept, DVC's hints and explained tracebacks left
out, and progress lines when the output is not a terminal."""

import logging
import sys

from flows import console_log, stage_runner
from tasks import progress


def _record(message: str, level: int = logging.INFO, exc_info=None, **extra) -> logging.LogRecord:
    record = logging.LogRecord("prefect.task_runs", level, __file__, 1, message, None, exc_info)
    record.__dict__.update(extra)
    return record


def test_one_prefix_per_line_naming_the_stage():
    formatter = console_log.ConsoleFormatter()
    line = formatter.format(_record("train epoch 3/30 (4.1 s): loss=0.3", task_name="train"))
    assert line.endswith(" train      | train epoch 3/30 (4.1 s): loss=0.3") and line.count("INFO") == 0
    assert "| WARNING the validation split is small" in formatter.format(
        _record("the validation split is small", logging.WARNING, task_name="train"))
    assert " ingest " in formatter.format(logging.LogRecord("tasks.ingest.stage", logging.INFO, "", 1, "x", None, None))


def test_tracebacks_only_for_errors_that_do_not_explain_themselves():
    formatter = console_log.ConsoleFormatter()
    for error, shown in ((ValueError("params.yaml: train.epochs must be >= 1"), False),
                         (stage_runner.StageFailed("stage 'train' failed: ...", "train", ""), False),
                         (KeyError("a bug"), True)):
        try:
            raise error
        except Exception:
            line = formatter.format(_record("Finished in state Failed", logging.ERROR, sys.exc_info()))
        assert ("Traceback" in line) is shown, line
    assert not console_log._not_routine(_record("Finished in state Completed()"))


def test_a_stages_log_line_is_relayed_at_its_level_without_its_prefix(caplog):
    logger = logging.getLogger("test.relay")
    relay = stage_runner.relay(logger)
    with caplog.at_level(logging.INFO, "test.relay"):
        relay("INFO tasks.train.stage: train: 1220 training images")
        relay("WARNING tasks.train.stage: train: the validation split is small")
        relay("Running stage 'train':")
    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        ("INFO", "train: 1220 training images"), ("WARNING", "train: the validation split is small"),
        ("INFO", "Running stage 'train':")]
    for hint in ("To track the changes with git, run:", "\tgit add dvc.lock data/.gitignore",
                 "To enable auto staging, run:", "\tdvc config core.autostage true",
                 "Use `dvc push` to send your updates to remote storage."):
        assert hint.strip().startswith(stage_runner._DVC_HINTS)
    assert stage_runner._TENSORFLOW_NOISE.match(
        "E0000 00:00:1796039459.649690   26167 cuda_executor.cc:1228] failed call to cuInit: UNKNOWN ERROR (303)")


def test_progress_is_a_log_line_every_few_seconds_when_not_on_a_terminal(caplog, monkeypatch):
    monkeypatch.setenv("IMGPIPE_PROGRESS_SECONDS", "0")
    with caplog.at_level(logging.INFO):
        with progress.bar(200, "file", "ingest") as shown:  # pytest's stderr is not a terminal
            assert isinstance(shown, progress.LoggedProgress)
            for _ in range(4):
                shown.update(50)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].startswith("ingest: 50/200 files (25%), ") and "files/s, about " in lines[0] and " left" in lines[0]
    assert lines[-1].startswith("ingest: 200/200 files (100%)")
    assert progress.duration(3725) == "1 h 2 min" and progress.duration(65) == "1 min 5 s"


def test_a_run_that_serve_cancels_reads_as_cancelled_not_as_a_crash():
    """Issue 25 item 7: what Prefect's engine says when the runner cancels a served run (lines seen on a Ctrl-C)."""
    for noise in ("Crash detected! Execution was aborted by a termination signal.",
                  "Finished in state Crashed('Execution was aborted by a termination signal.')",
                  "Finished in state Running()", "Finished in state Completed()",
                  "Execution of flow run '01a2504f-a175-7e02-af70-7907500d3f8f' was terminated.",
                  "Downloading flow code from storage at '.'"):
        assert not console_log.served_run_lines(_record(noise, logging.ERROR)), noise
    cancelled = _record("Flow run was cancelled.", flow_name="training")
    assert console_log.served_run_lines(cancelled) and cancelled.getMessage().startswith("run cancelled: ")
    aborted = _record("Aborted submission of flow run '01a2504f': Server returned a non-pending state 'CANCELLED'")
    assert console_log.served_run_lines(aborted)
    assert aborted.getMessage() == ("scheduled run 01a2504f not started: cancelled, since a run was in flight (one "
                                    "run at a time)")
    # a crash of another cause, a failed state, the summary: as they are
    for kept in ("Crash detected! Execution was interrupted by an unexpected exception: MemoryError",
                 "Finished in state Failed('Task run encountered an exception')", "imgpipe training run: Promoted"):
        record = _record(kept, logging.ERROR)
        assert console_log.served_run_lines(record) and record.getMessage() == kept


SERVED_RUN_PROCESS = """
import logging
from prefect.logging.configuration import setup_logging
setup_logging()
run = logging.getLogger("prefect.task_runs")
run.info("stage ingest unchanged in 1.9 s", extra={"task_name": "ingest", "task_run_name": "ingest-470"})
run.error("Crash detected! Execution was aborted by a termination signal.", extra={"task_name": "ingest"})
logging.getLogger("prefect.flow_runs").info("Finished in state Running()", extra={"flow_name": "training"})
logging.getLogger("prefect.flow_runs").info("Flow run was cancelled.", extra={"flow_name": "training"})
print(sorted(type(handler).__name__ for handler in logging.getLogger("prefect.flow_runs").handlers))
"""


def test_served_runs_processes_log_as_imgpipe_run_does_and_still_send_their_logs_to_prefect(tmp_path):
    import os
    import subprocess

    from tests.conftest import PROJECT_ROOT

    settings = console_log.served_runs_logging(tmp_path)
    environment = dict(os.environ, PREFECT_LOGGING_SETTINGS_PATH=str(settings), PYTHONPATH=str(PROJECT_ROOT),
                       PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW="ignore")  # no run here: nothing to send
    child = subprocess.run([sys.executable, "-c", SERVED_RUN_PROCESS], cwd=tmp_path, env=environment,
                           capture_output=True, text=True, timeout=120, check=True)
    lines = child.stderr.splitlines()
    assert [line[9:] for line in lines] == [
        "ingest     | stage ingest unchanged in 1.9 s",
        "training   | run cancelled: its stages were stopped; the next run redoes what this one left unfinished"], lines
    assert child.stdout.strip() == "['APILogHandler']"  # the run's log still goes to Prefect's UI
