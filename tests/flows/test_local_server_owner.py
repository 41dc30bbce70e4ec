"""The project's Prefect servers accept only their owner (issue 27 item 4), a command's temporary server dies with
the command even when it is killed (item 14), and a copy of the project never uses or stops the original's server.

These start real Prefect servers (one long-lived, one temporary): about half a minute on a busy machine.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from flows import local_server, prefect_home
from tests.conftest import PROJECT_ROOT

IMGPIPE = str(Path(sys.executable).parent / "imgpipe")


def _environment(home: Path) -> dict[str, str]:
    """This environment without any PREFECT_* variable (no test server), and a HOME of its own."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")}
    return dict(environment, HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def _status(api_url: str, secret: str | None) -> int:
    """What the API says to a request listing flow runs, with the secret or without."""
    request = urllib.request.Request(f"{api_url}/flow_runs/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    if secret is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(secret.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _imgpipe(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    result = subprocess.run([IMGPIPE, *arguments], env=environment, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def test_the_projects_server_asks_for_the_owners_secret_and_a_copy_leaves_it_alone(tmp_path):
    project = tmp_path / "project"
    (project / ".dvc").mkdir(parents=True)
    environment = _environment(tmp_path / "home")
    _imgpipe(environment, "server", "start", "--repo", str(project))
    try:
        record = json.loads((project / ".dvc/tmp/prefect/server.json").read_text())
        assert record["root"] == str(project.resolve())
        secret = prefect_home.auth_file(project).read_text().strip()
        assert _status(record["api_url"], None) == 401  # another user of the machine: refused
        assert _status(record["api_url"], "a guess") == 401
        assert _status(record["api_url"], secret) == 200  # the owner, whose commands read the secret
        assert _mode(prefect_home.home(project)) == 0o700 and _mode(prefect_home.auth_file(project)) == 0o600

        copy = tmp_path / "copy"
        subprocess.run(["cp", "-a", str(project), str(copy)], check=True)
        assert "not running" in _imgpipe(environment, "server", "status", "--repo", str(copy)).stdout
        stopped = _imgpipe(environment, "server", "stop", "--repo", str(copy)).stdout
        assert stopped.startswith("no Prefect server of this project was running"), stopped
        assert local_server.running(project) is not None  # the original's server still serves the original
        assert local_server.running(copy) is None
    finally:
        _imgpipe(environment, "server", "stop", "--repo", str(project))
    assert local_server.running(project) is None


COMMAND = """
import os, sys, time
from pathlib import Path
from flows import prefect_setup
api_url = prefect_setup.use_project(Path(sys.argv[1]), temporary_server=True)
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    client.hello().raise_for_status()  # this command's own client sends the secret
print(api_url, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="dying with the parent is Linux's PR_SET_PDEATHSIG")
def test_a_commands_temporary_server_asks_for_the_secret_and_dies_with_a_killed_command(tmp_path):
    project = tmp_path / "project"
    (project / ".dvc").mkdir(parents=True)
    command = subprocess.Popen([sys.executable, "-c", COMMAND, str(project)], cwd=PROJECT_ROOT,
                               env=_environment(tmp_path / "home"), stdout=subprocess.PIPE, text=True)
    try:
        api_url = command.stdout.readline().strip()
        assert api_url.startswith("http://127.0.0.1:"), api_url
        servers = psutil.Process(command.pid).children()
        assert len(servers) == 1 and "prefect" in servers[0].cmdline()
        assert _status(api_url, None) == 401
        assert _status(api_url, prefect_home.auth_file(project).read_text().strip()) == 200
        assert not (project / ".dvc/tmp/prefect/server.json").exists()  # no later command attaches to it
    finally:
        command.send_signal(signal.SIGKILL)
        command.wait()
    deadline = time.monotonic() + 60
    while servers[0].is_running() and servers[0].status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.5)
    gone = not servers[0].is_running() or servers[0].status() == psutil.STATUS_ZOMBIE
    if not gone:
        servers[0].kill()
    assert gone, "the temporary server outlived the command killed with SIGKILL"


RUN_SETUP = """
import sys
from pathlib import Path
from flows import console_log, prefect_setup
console_log.configure()
print(prefect_setup.use_project(Path(sys.argv[1]), project_server=True), flush=True)
"""


def test_a_training_run_starts_the_projects_server_once_says_how_to_stop_it_and_later_runs_use_it(tmp_path):
    """Issue 25 item 6: no server start-up in every `imgpipe run` (10-20 s of a no-op run); the same secured server
    `imgpipe server start` starts, named once; IMGPIPE_PREFECT_SERVER=temporary declines it."""
    project = tmp_path / "project"
    (project / ".dvc").mkdir(parents=True)
    environment = _environment(tmp_path / "home")

    def setup(**variables: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", RUN_SETUP, str(project)], cwd=PROJECT_ROOT,
                              env=dict(environment, **variables), capture_output=True, text=True, timeout=400,
                              check=True)

    try:
        first = setup()
        record = json.loads((project / ".dvc/tmp/prefect/server.json").read_text())
        assert first.stdout.strip() == record["api_url"] and record["root"] == str(project.resolve())
        assert first.stderr.count("`imgpipe server stop` stops it") == 1, first.stderr
        secret = prefect_home.auth_file(project).read_text().strip()
        assert _status(record["api_url"], None) == 401 and _status(record["api_url"], secret) == 200
        second = setup()
        assert second.stdout.strip() == record["api_url"]
        assert "stops it" not in second.stderr and "using the project's Prefect server" in second.stderr
    finally:
        _imgpipe(environment, "server", "stop", "--repo", str(project))
    declined = setup(IMGPIPE_PREFECT_SERVER="temporary")
    assert declined.stdout.strip().startswith("http://127.0.0.1:") and "stops it" not in declined.stderr
    assert not (project / ".dvc/tmp/prefect/server.json").exists() and local_server.running(project) is None
