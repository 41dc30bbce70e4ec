"""The real training flow (Prefect, DVC, TensorFlow, Great Expectations) in a temporary copy of the repository.

The tests of this module share one copy and run in order: build, skip, retrain, fail, overlap, schedule.
"""

import base64
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks import metrics_file
from tests.conftest import PROJECT_ROOT


def _git(repo: Path, *arguments: str) -> str:
    return subprocess.run(["git", *arguments], cwd=repo, check=True, capture_output=True, text=True).stdout


def _copy_repository(target: Path) -> Path:
    """The committed files plus the working-tree versions of them, as a fresh clone would have them."""
    files = _git(PROJECT_ROOT, "ls-files", "--cached", "--others", "--exclude-standard").splitlines()
    for name in files:
        source = PROJECT_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    _git(target, "init", "--quiet")
    _git(target, "-c", "user.name=test", "-c", "user.email=test@example.com", "add", "--all")
    # dvclive needs a commit to exist
    _git(target, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "--quiet", "-m", "copy")
    return target


def _set_params(repo: Path, changes: dict) -> None:
    params_file = repo / "params.yaml"
    values = yaml.safe_load(params_file.read_text())
    for dotted_key, value in changes.items():
        *parents, key = dotted_key.split(".")
        node = values
        for part in parents:
            node = node[part]
        node[key] = value
    params_file.write_text(yaml.safe_dump(values, sort_keys=False))


# Exports (a SavedModel, ONNX, an int8 model, each timed on every engine) cost the export stage most of its time;
# the flows' tests that do not check them turn them off (tests/export/ checks every format and engine)
NO_EXPORTS = {"export.formats": [], "export.int8_calibration": 0}


def _statuses(summary: dict) -> dict[str, str]:
    return {stage["name"]: stage["status"] for stage in summary["stages"]}


def _environment_for(repo: Path) -> dict[str, str]:
    """For a subprocess: this session's Prefect test server, and `python` meaning this interpreter."""
    from prefect.settings import PREFECT_API_URL

    return dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONUNBUFFERED="1",
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = _copy_repository(tmp_path_factory.mktemp("imgpipe"))
    # the real demo data, shrunk training
    # one export, ONNX, which production must carry with its checksums (the others are checked in tests/export/)
    _set_params(repo, {"preprocess.image_size": 16, "train.epochs": 4, "train.width": 8, "train.depth": 2,
                       "evaluate.gate.min_accuracy": 0.3, "evaluate.gate.min_macro_f1": 0.2,
                       "export.formats": ["onnx"], "export.int8_calibration": 0})
    return repo


@pytest.fixture
def notifications(monkeypatch):
    """A local HTTP endpoint standing in for a chat service; IMGPIPE_NOTIFY_URL points at it."""
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *arguments):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("IMGPIPE_NOTIFY_URL", f"json://127.0.0.1:{server.server_port}/hook")
    yield received
    server.shutdown()


def test_flow_builds_everything_then_skips_everything(repo, prefect_server, notifications):
    from flows.training import training

    first = training(repo=str(repo))
    assert list(_statuses(first)) == ["demo", "ingest", "validate", "preprocess", "embed", "health", "train",
                                      "export", "evaluate"]
    assert set(_statuses(first).values()) == {"ran"}
    assert first["outcome"] == "Promoted" and first["pushed"] is True
    assert (repo / "data/models/candidate/model.keras").is_file()
    assert (repo / "data/models/production/model.keras").read_bytes() == \
        (repo / "data/models/candidate/model.keras").read_bytes()
    assert (repo / "data/models/production.dvc").is_file()  # production is versioned by DVC
    # the export stage's folder beside the candidate; production is one folder: the model, its exports, engines.json
    assert json.loads((repo / "data/models/candidate_exports/checksums.json").read_text())["version"] == \
        json.loads((repo / "data/models/candidate/model_card.json").read_text())["version"]
    production_checksums = json.loads((repo / "data/models/production/checksums.json").read_text())
    assert production_checksums["complete"] and {"model.keras", "model.onnx", "engines.json"} <= \
        set(production_checksums["sha256"])
    assert (repo / "data/reports/validation/data_docs/index.html").is_file()
    assert (repo / "data/reports/index.html").is_file()
    metrics = metrics_file.read(repo / "data/reports/evaluation")  # test_accuracy in the file, accuracy here
    assert metrics == {key: value for key, value in first["metrics"].items() if key != "per_class"}
    assert metrics["test_images"] > 200 and set(first["metrics"]["per_class"]) == set("0123456789")
    assert len(pd.read_parquet(repo / "data/interim/manifest.parquet")) == 1797  # stored in the raw store's shards
    shard = repo / "data/raw/shard-000001.tar"
    assert [path.name for path in shard.parent.iterdir()] == [shard.name]
    inode = shard.stat().st_ino
    assert shard.stat().st_nlink >= 2  # one copy: the workspace and DVC's cache share it
    assert any((repo / ".dvc/remote").rglob("*")), "nothing was pushed to the local remote"
    assert [message["title"] for message in notifications] == ["imgpipe: candidate promoted"]
    assert "no production model before" in notifications[0]["message"]

    dvc = [sys.executable, "-m", "dvc"]
    status = subprocess.run([*dvc, "status"], cwd=repo, capture_output=True, text=True, check=True).stdout
    # `dvc repro` would run nothing but ingest, which always runs its own scan (and changes nothing: see below)
    assert status.split() == ["ingest:", "always", "changed"], status
    shown = subprocess.run([*dvc, "metrics", "show", "--json"], cwd=repo, capture_output=True, text=True, check=True)
    assert "accuracy" in shown.stdout

    second = training(repo=str(repo), return_state=True)
    assert second.name == "Nothing to do"
    assert _statuses(second.result()) == {"demo": "skipped", "ingest": "unchanged", "validate": "skipped",
                                          "preprocess": "skipped", "embed": "skipped", "health": "skipped",
                                          "train": "skipped", "export": "skipped", "evaluate": "skipped"}
    assert shard.stat().st_ino == inode  # ingest ran (DVC deleted its outputs) and linked the same file back
    # one `dvc status` before ingest answered for every other stage: none was asked of DVC again
    assert [stage["name"] for stage in second.result()["stages"] if stage["seconds"] > 0] == ["ingest"]
    # not the first run's "passed all 3 checks ... and may be promoted": it was promoted then
    assert second.result()["gate"]["sentence"].startswith(
        "Nothing changed since the last run: the candidate is the production model"), second.result()["gate"]
    assert len(notifications) == 1  # nothing happened, nothing said


def test_changing_epochs_retrains_and_gates_against_production(repo, prefect_server):
    from flows.training import training

    production_before = (repo / "data/models/production/model.keras").read_bytes()
    _set_params(repo, {"train.epochs": 3})
    third = training(repo=str(repo), push=False, return_state=True)
    summary = third.result()
    ran = {name for name, status in _statuses(summary).items() if status == "ran"}
    assert ran == {"train", "export", "evaluate"}
    assert third.name in ("Promoted", "Refused")
    assert summary["gate"]["champion"] is not None  # compared with the production model
    gate = json.loads((repo / "data/reports/evaluation/gate.json").read_text())
    assert gate["sentence"] and {check["name"] for check in gate["checks"]} >= {"export parity"}
    if third.name == "Refused":
        assert (repo / "data/models/production/model.keras").read_bytes() == production_before

    # by hand: overrule the gate if it refused, then roll back to the first production model
    imgpipe = [str(Path(sys.executable).parent / "imgpipe")]
    environment = _environment_for(repo)
    if third.name == "Refused":
        forced = subprocess.run([*imgpipe, "promote", "--repo", str(repo), "--force", "--reason", "demo"],
                                env=environment, capture_output=True, text=True)
        assert forced.returncode == 0, forced.stderr[-2000:]
    rolled = subprocess.run([*imgpipe, "rollback", "--repo", str(repo), "--reason", "test"], env=environment,
                            capture_output=True, text=True)
    assert rolled.returncode == 0, rolled.stderr[-2000:]
    assert (repo / "data/models/production/model.keras").read_bytes() == production_before
    history = [json.loads(line) for line in (repo / "data/models/registry/history.jsonl").read_text().splitlines()]
    assert [event["action"] for event in history] == ["promote", "promote", "rollback"]
    again = subprocess.run([*imgpipe, "rollback", "--repo", str(repo)], env=environment, capture_output=True, text=True)
    assert again.returncode == 1 and "no earlier production model" in again.stderr


def test_invalid_data_ends_in_its_named_state_and_leaves_production_alone(repo, prefect_server, notifications):
    from flows.training import training

    production_before = (repo / "data/models/production/model.keras").read_bytes()
    _set_params(repo, {"validate.min_images_per_class": 100000})
    state = training(repo=str(repo), push=False, return_state=True)
    assert state.name == "Invalid data" and state.is_failed()
    assert "min_images_per_class" in state.message
    assert (repo / "data/models/production/model.keras").read_bytes() == production_before
    assert notifications and notifications[-1]["title"] == "imgpipe: data validation failed"
    _set_params(repo, {"validate.min_images_per_class": 10})


def test_two_runs_at_once_never_share_the_workspace(repo, prefect_server):
    from flows.run_lock import workspace_lock
    from flows.training import training

    training(repo=str(repo), push=False)  # settle after the previous test
    with workspace_lock(repo, timeout=0):
        busy = training(repo=str(repo), push=False, return_state=True)
    assert busy.name == "Skipped" and "another imgpipe run" in busy.message

    # two real runs started together: one trains, the other finds the repository busy and does nothing
    _set_params(repo, {"train.epochs": 2})
    command = [str(Path(sys.executable).parent / "imgpipe"), "run", "--repo", str(repo), "--no-push"]
    environment = _environment_for(repo)
    logs = [repo.parent / f"run{index}.log" for index in range(2)]  # files: an unread pipe would stall a run
    runs = [subprocess.Popen(command, env=environment, stdout=log.open("w"), stderr=subprocess.STDOUT) for log in logs]
    for run in runs:
        run.wait(timeout=400)
    outputs = [log.read_text() for log in logs]
    assert [run.returncode for run in runs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    did_nothing = ["this run did nothing" in output for output in outputs]
    assert sorted(did_nothing) == [False, True], [output[-1500:] for output in outputs]
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=repo, capture_output=True, text=True)
    assert status.stdout.split() == ["ingest:", "always", "changed"], status.stdout + status.stderr


def _imgpipe(repo: Path, *arguments: str, environment: dict[str, str] | None = None,
             **variables: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "imgpipe"), *arguments, "--repo", str(repo)]
    return subprocess.run(command, env=dict(environment or _environment_for(repo), **variables), capture_output=True,
                          text=True, timeout=600)


def _production_version(repo: Path) -> str:
    return json.loads((repo / "data/models/production/version.json").read_text())["version"]


def test_a_run_killed_while_releasing_is_finished_by_the_next_run(repo, prefect_server):
    from flows import journal
    from tasks.kill_point import VARIABLE

    # a new candidate, and a gate it passes whatever its scores
    _set_params(repo, {"train.epochs": 5, "evaluate.gate.tolerance": 1.0, "evaluate.gate.max_class_f1_drop": 1.0})
    production_before = _production_version(repo)
    killed = _imgpipe(repo, "run", **{VARIABLE: "release:judged"})  # the gate said pass; nothing promoted yet
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:] + killed.stderr[-3000:]
    gate = json.loads((repo / "data/reports/evaluation/gate.json").read_text())
    assert gate["decision"] == "pass" and not gate["promoted"] and _production_version(repo) == production_before
    assert journal.owed(repo) == ["promote", "push"]
    # killed again: after the promotion was recorded, during `dvc add` of production, during `dvc push`
    for step in ("promote:committed", "dvc add", "dvc push"):
        killed = _imgpipe(repo, "run", **{VARIABLE: step})
        assert killed.returncode == -signal.SIGKILL, step + ":\n" + killed.stdout[-3000:] + killed.stderr[-3000:]

    leftover = repo / "data/.processed.killed.partial"  # as a preprocess stage killed before its rename leaves it
    leftover.mkdir()
    (leftover / "shard-00000.tfrecord").write_bytes(b"half")
    finished = _imgpipe(repo, "run")
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert "finished what an interrupted run left" in finished.stdout and "pushed to remote:   yes" in finished.stdout
    assert not leftover.exists() and f"removed {leftover}" in finished.stdout
    candidate = json.loads((repo / "data/models/candidate/model_card.json").read_text())["version"]
    assert _production_version(repo) == candidate != production_before
    history = [json.loads(line) for line in (repo / "data/models/registry/history.jsonl").read_text().splitlines()]
    assert history[-1]["action"] == "promote" and history[-1]["version"] == candidate
    assert not journal.journal_file(repo).exists()
    dvc = [sys.executable, "-m", "dvc"]
    tracked = subprocess.run([*dvc, "status", "data/models/production.dvc", "data/models/registry.dvc"], cwd=repo,
                             capture_output=True, text=True)
    assert "up to date" in tracked.stdout, tracked.stdout + tracked.stderr  # the .dvc files match the folders
    remote = subprocess.run([*dvc, "status", "--cloud"], cwd=repo, capture_output=True, text=True)
    assert "in sync" in remote.stdout, remote.stdout + remote.stderr  # nothing left to push
    assert [item.name for item in (repo / "data/models").iterdir() if item.name.endswith((".partial", ".old"))] == []

    from flows.training import training

    assert training(repo=str(repo), return_state=True).name == "Nothing to do"  # nothing is owed any more


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def real_prefect_server(tmp_path):
    """`prefect server start` with its services (the test harness runs none, so it never schedules anything)."""
    port = _free_port()
    environment = dict(
        os.environ, PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="1",
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
    )
    environment.pop("PREFECT_API_URL", None)
    log = (tmp_path / "server.log").open("w")  # a file, not a pipe: an unread pipe fills up and stalls the server
    server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=environment, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(1)
    yield url
    _stop(server)


def _scheduled_runs(api_url: str, states: list[str], secret: str | None = None) -> list[dict]:
    """The deployment's flow runs in these state types, latest first (`secret`: the project's server asks for it)."""
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
    request = urllib.request.Request(
        f"{api_url}/flow_runs/filter", method="POST", headers=headers,
        data=json.dumps({"limit": 20, "sort": "START_TIME_DESC",
                         "flow_runs": {"state": {"type": {"any_": states}}}}).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return [run for run in json.loads(response.read()) if run["deployment_id"]]


_FINISHED = ["COMPLETED", "FAILED", "CRASHED"]  # overlapping runs are CANCELLED
_UNFINISHED = ["RUNNING", "PENDING", "CANCELLING"]


def _wait_for(condition, seconds: float, serving: subprocess.Popen, log_file: Path):
    """Poll `condition` every second until it returns something true, serve exits, or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert serving.poll() is None, "serve exited:\n" + log_file.read_text()[-3000:]
        found = condition()
        if found:
            return found
        time.sleep(1)
    return None


def _interrupt_a_run_and_check(serving: subprocess.Popen, log_file: Path, api_url: str, stop,
                               secret: str | None = None) -> None:
    """Stop serve while a scheduled run is in flight; then serve has exited cleanly and no run is left Running."""
    assert _wait_for(lambda: _scheduled_runs(api_url, ["RUNNING"], secret), 60, serving, log_file), \
        "no scheduled run started:\n" + log_file.read_text()[-3000:]
    time.sleep(2)  # into its stages
    stop()
    assert serving.wait(timeout=120) == 0, log_file.read_text()[-3000:]
    output = log_file.read_text()
    assert "RuntimeWarning" not in output and "Traceback" not in output, output[-3000:]
    assert _scheduled_runs(api_url, _UNFINISHED, secret) == [], "a run is left shown as unfinished:\n" + output[-3000:]
    assert _scheduled_runs(api_url, ["CANCELLED"], secret), output[-3000:]
    _check_the_served_log(output)


_PREFECTS_FORMAT = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| [A-Z]+ +\| ", re.MULTILINE)  # 12:03:05.123 | INFO    | ...
_OUR_FORMAT = re.compile(r"^\d\d:\d\d:\d\d \S+ *\| ", re.MULTILINE)  # 12:03:05 ingest     | ...


def _check_the_served_log(output: str) -> None:
    """Issue 25 item 7: serve and its runs log as `imgpipe run` does, each finished run ends with its summary (the
    gate's decision in it), and the run that Ctrl-C or SIGTERM stopped reads as cancelled, not as a crash."""
    assert not _PREFECTS_FORMAT.search(output), _PREFECTS_FORMAT.search(output).group(0) + "\n" + output[-3000:]
    assert re.search(r"^\d\d:\d\d:\d\d training +\| Beginning flow run", output, re.MULTILINE), output[-3000:]
    assert re.search(r"^\d\d:\d\d:\d\d ingest +\| stage ingest ", output, re.MULTILINE), output[-3000:]
    assert "imgpipe training run: Nothing to do" in output and "  gate: pass  ->  Nothing to do" in output
    assert "Crash detected" not in output and "Finished in state Running()" not in output, output[-3000:]
    assert "cancelled" in output[output.index("stopping: cancelling the run in flight"):].lower(), output[-3000:]
    log_lines = [line for line in output.splitlines() if _OUR_FORMAT.match(line)]
    assert len(log_lines) > 10, output[-3000:]


def test_a_served_schedule_triggers_a_real_run(repo, real_prefect_server, tmp_path):
    environment = dict(_environment_for(repo), PREFECT_API_URL=real_prefect_server, PREFECT_RUNNER_POLL_FREQUENCY="2")
    log_file = tmp_path / "serve.log"
    serving = subprocess.Popen(
        [str(Path(sys.executable).parent / "imgpipe"), "serve", "--repo", str(repo), "--interval", "5"],
        env=environment, stdout=log_file.open("w"), stderr=subprocess.STDOUT,
    )
    try:
        finished = _wait_for(lambda: _scheduled_runs(real_prefect_server, _FINISHED), 180, serving, log_file)
        assert finished, "no scheduled run finished within 3 minutes:\n" + log_file.read_text()[-3000:]
        assert finished[0]["state"]["name"] == "Nothing to do", finished[0]["state"]
        _interrupt_a_run_and_check(serving, log_file, real_prefect_server, serving.terminate)  # SIGTERM
    finally:
        _stop(serving)


def test_gc_compacts_commits_and_prunes_leaving_the_pipeline_up_to_date(repo, prefect_server):
    command = [str(Path(sys.executable).parent / "imgpipe"), "gc", "--repo", str(repo)]
    result = subprocess.run(command, env=_environment_for(repo), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "raw store:" in result.stdout and "0 images moved" in result.stdout  # the demo's store is compact
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=repo, capture_output=True, text=True)
    assert status.stdout.split() == ["ingest:", "always", "changed"], status.stdout + status.stderr


def _local_server(repo: Path) -> dict | None:
    state = repo / ".dvc/tmp/prefect/server.json"
    return json.loads(state.read_text()) if state.is_file() else None


def test_serve_needs_no_setup_and_its_server_serves_later_commands(repo, tmp_path):
    """No PREFECT_* variable at all: serve starts the project's own server, whose scheduler runs the schedule."""
    environment = {name: value for name, value in _environment_for(repo).items() if not name.startswith("PREFECT_")}
    log_file = tmp_path / "serve.log"
    serving = subprocess.Popen(
        [str(Path(sys.executable).parent / "imgpipe"), "serve", "--repo", str(repo), "--interval", "5"],
        env=environment, stdout=log_file.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    started = time.monotonic()
    try:
        api_url = _wait_for(lambda: (_local_server(repo) or {}).get("api_url"), 60, serving, log_file)
        assert api_url, "no local Prefect server:\n" + log_file.read_text()[-3000:]
        # the project's server answers its owner only: without the secret, nothing (issue 27 item 4)
        with pytest.raises(urllib.error.HTTPError, match="401"):
            _scheduled_runs(api_url, _FINISHED)
        secret = (repo / ".dvc/tmp/prefect/api-auth").read_text().strip()
        # a deadline for a hung serve, not a speed target: a loaded 2-core machine has taken over a minute
        finished = _wait_for(lambda: _scheduled_runs(api_url, _FINISHED, secret), 240 - (time.monotonic() - started),
                             serving, log_file)
        assert finished, "no scheduled run finished within 4 minutes:\n" + log_file.read_text()[-3000:]
        assert finished[0]["state"]["name"] == "Nothing to do", finished[0]["state"]
        _interrupt_a_run_and_check(serving, log_file, api_url,
                                   lambda: os.killpg(serving.pid, signal.SIGINT), secret)  # Ctrl-C in its terminal

        # the server outlives serve; later commands use it, and their runs are kept in the project
        assert (repo / ".dvc/tmp/prefect/prefect.db").is_file()
        run = _imgpipe(repo, "run", "--no-push", environment=environment)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "temporary server" not in run.stdout + run.stderr and "Nothing to do" in run.stdout
        status = _imgpipe(repo, "server", "status", environment=environment)
        assert status.returncode == 0 and api_url.removesuffix("/api") in status.stdout
    finally:
        _stop(serving)
        stopped = _imgpipe(repo, "server", "stop", environment=environment)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert _local_server(repo) is None and "not running" in _imgpipe(repo, "server", "status",
                                                                      environment=environment).stdout
