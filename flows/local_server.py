"""The project's own long-lived Prefect server: starts, finds and stops it; writes .dvc/tmp/prefect/server.json.

Prefect's temporary server (what a command gets without PREFECT_API_URL) runs no scheduler, so a served schedule
never fires on it. `imgpipe serve` therefore starts this one when no API is configured: a `prefect server start`
in the background, with its SQLite database in the project (.dvc/tmp/prefect/prefect.db), its log beside it, and
its address in server.json, where later commands find it and use it while it runs. `imgpipe server stop` ends it.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import filelock

PREFERRED_PORT = 4200  # Prefect's usual port, when free; any free port otherwise
STOP_WAIT_SECONDS = 20


class ServerFailed(RuntimeError):
    """The local Prefect server did not start."""


class ServerExited(ServerFailed):
    """The local Prefect server exited while starting (most often: its port was taken meanwhile)."""


@dataclass(frozen=True)
class LocalServer:
    pid: int
    api_url: str
    log: Path

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")


def home(root: Path) -> Path:
    """Where this project keeps Prefect's files: inside the project, under a folder git and DVC already ignore."""
    return root / ".dvc" / "tmp" / "prefect"


def _state_file(root: Path) -> Path:
    return home(root) / "server.json"


def _healthy(api_url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now holds that id
        return False
    return True


def _read_state(root: Path) -> LocalServer | None:
    try:
        state = json.loads(_state_file(root).read_text(encoding="utf-8"))
        return LocalServer(int(state["pid"]), str(state["api_url"]), Path(state["log"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running(root: Path) -> LocalServer | None:
    """The project's server when it is up and answering, else None."""
    server = _read_state(root)
    if server is None or not _alive(server.pid) or not _healthy(server.api_url):
        return None
    return server


def _free_port() -> int:
    for port in (PREFERRED_PORT, 0):
        with socket.socket() as probe:
            # as the server itself will: a port left in TIME_WAIT by a server stopped a moment ago is free for it
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise ServerFailed("no free TCP port on 127.0.0.1 for the local Prefect server")


def _server_environment(root: Path) -> dict[str, str]:
    environment = dict(os.environ)
    environment.pop("PREFECT_API_URL", None)
    environment.setdefault("PREFECT_HOME", str(home(root)))
    environment.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not any(name in environment for name in ("PREFECT_SERVER_DATABASE_CONNECTION_URL",
                                                "PREFECT_API_DATABASE_CONNECTION_URL")):
        environment["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{home(root) / 'prefect.db'}"
    return environment


def _start(root: Path, timeout: float) -> LocalServer:
    home(root).mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = home(root) / "server.log"
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("ab") as output:
        output.write(f"\n--- {datetime.datetime.now().isoformat(timespec='seconds')} {' '.join(command)}\n".encode())
        output.flush()
        # its own session: a Ctrl-C in the terminal that started it stops the command, not the server
        process = subprocess.Popen(command, cwd=root, env=_server_environment(root), stdin=subprocess.DEVNULL,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    server = LocalServer(process.pid, f"http://127.0.0.1:{port}/api", log)
    deadline = time.monotonic() + timeout
    try:
        while not _healthy(server.api_url):
            if process.poll() is not None:
                raise ServerExited(f"the local Prefect server exited with code {process.returncode} while starting; "
                                   f"its log is {log}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise ServerFailed(f"the local Prefect server did not answer within {timeout:.0f} s (a busy machine? "
                                   f"raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); its log is {log}")
            time.sleep(0.5)
    except BaseException:  # not started, or Ctrl-C: leave no server that nothing records
        _terminate(process.pid)
        raise
    from tasks import atomic  # here: every imgpipe command imports this module, and tasks.atomic imports pandas

    atomic.write_json(_state_file(root), {"pid": server.pid, "api_url": server.api_url, "log": str(log)})
    return server


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def ensure(root: Path, timeout: float) -> tuple[LocalServer, bool]:
    """The project's server, started when it is not running; and whether this call started it."""
    if not (root / ".dvc").is_dir():
        raise ValueError(f"{root}: not an imgpipe project (no .dvc folder); run from the project folder or pass "
                         "--repo")
    home(root).mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(home(root) / "server.lock"), timeout=timeout + 30):
        server = running(root)
        if server is not None:
            return server, False
        try:
            return _start(root, timeout), True
        except ServerExited:  # most often its port, free a moment ago, was taken since: once more on another
            return _start(root, timeout), True


def _terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it when this process started it
        except ChildProcessError:
            pass
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _is_prefect_server(pid: int) -> bool:
    """Whether process `pid` is a `prefect server start` (where /proc tells; elsewhere its answering says so)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"prefect" in command and b"server" in command


def stop(root: Path) -> LocalServer | None:
    """Stop the project's server (answering or hung); returns it, or None when none was running."""
    if not home(root).is_dir():
        return None
    with filelock.FileLock(str(home(root) / "server.lock"), timeout=STOP_WAIT_SECONDS + 30):
        server = _read_state(root)
        if server is not None and _alive(server.pid) and (_healthy(server.api_url) or _is_prefect_server(server.pid)):
            _terminate(server.pid)
        else:
            server = None
        _state_file(root).unlink(missing_ok=True)
    return server
