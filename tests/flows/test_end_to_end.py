"""The real training flow (Prefect, DVC, TensorFlow, Great Expectations) in a temporary copy of the repository.

The tests of this module share one copy and run in order: build, skip, retrain, fail, overlap, schedule.
"""

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

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
    _set_params(repo, {"preprocess.image_size": 16, "train.epochs": 4, "train.width": 8, "train.depth": 2,
                       "evaluate.gate.min_accuracy": 0.3, "evaluate.gate.min_macro_f1": 0.2})
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
    assert list(_statuses(first)) == ["demo", "ingest", "validate", "preprocess", "train", "evaluate"]
    assert set(_statuses(first).values()) == {"ran"}
    assert first["outcome"] == "Promoted" and first["pushed"] is True
    assert (repo / "data/models/candidate/model.keras").is_file()
    assert (repo / "data/models/production/model.keras").read_bytes() == \
        (repo / "data/models/candidate/model.keras").read_bytes()
    assert (repo / "data/models/production.dvc").is_file()  # production is versioned by DVC
    assert (repo / "data/reports/validation/data_docs/index.html").is_file()
    assert (repo / "data/reports/index.html").is_file()
    metrics = json.loads((repo / "data/reports/evaluation/metrics.json").read_text())
    assert metrics == first["metrics"] and metrics["test_images"] > 200
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
                                          "preprocess": "skipped", "train": "skipped", "evaluate": "skipped"}
    assert shard.stat().st_ino == inode  # ingest ran (DVC deleted its outputs) and linked the same file back
    assert len(notifications) == 1  # nothing happened, nothing said


def test_changing_epochs_retrains_and_gates_against_production(repo, prefect_server):
    from flows.training import training

    production_before = (repo / "data/models/production/model.keras").read_bytes()
    _set_params(repo, {"train.epochs": 3})
    third = training(repo=str(repo), push=False, return_state=True)
    summary = third.result()
    ran = {name for name, status in _statuses(summary).items() if status == "ran"}
    assert ran == {"train", "evaluate"}
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


def test_a_served_schedule_triggers_a_real_run(repo, real_prefect_server, tmp_path):
    environment = dict(_environment_for(repo), PREFECT_API_URL=real_prefect_server, PREFECT_RUNNER_POLL_FREQUENCY="2")
    log_file = tmp_path / "serve.log"
    serving = subprocess.Popen(
        [str(Path(sys.executable).parent / "imgpipe"), "serve", "--repo", str(repo), "--interval", "5"],
        env=environment, stdout=log_file.open("w"), stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 180
        finished: list[dict] = []
        while time.time() < deadline and not finished:
            time.sleep(2)
            assert serving.poll() is None, log_file.read_text()[-3000:]
            request = urllib.request.Request(
                f"{real_prefect_server}/flow_runs/filter", method="POST",
                data=json.dumps({"limit": 5, "sort": "START_TIME_DESC", "flow_runs": {"state": {"type": {
                    "any_": ["COMPLETED", "FAILED", "CRASHED"]}}}}).encode(),  # overlapping runs are CANCELLED
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                runs = json.loads(response.read())
            finished = [run for run in runs if run["deployment_id"]]
        assert finished, "no scheduled run finished within 3 minutes:\n" + log_file.read_text()[-3000:]
        assert finished[0]["state"]["name"] == "Nothing to do", finished[0]["state"]
    finally:
        _stop(serving)


def test_gc_compacts_commits_and_prunes_leaving_the_pipeline_up_to_date(repo, prefect_server):
    command = [str(Path(sys.executable).parent / "imgpipe"), "gc", "--repo", str(repo)]
    result = subprocess.run(command, env=_environment_for(repo), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "raw store:" in result.stdout and "0 images moved" in result.stdout  # the demo's store is compact
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=repo, capture_output=True, text=True)
    assert status.stdout.split() == ["ingest:", "always", "changed"], status.stdout + status.stderr
