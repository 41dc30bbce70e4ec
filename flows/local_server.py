"""The project's own long-lived Prefect server: starts, finds and stops it; writes .dvc/tmp/prefect/server.json.

Prefect's temporary server (what a command gets without PREFECT_API_URL) runs no scheduler, so a served schedule
never fires on it. `imgpipe serve` therefore starts this one when no API is configured: a `prefect server start`
in the background, with its SQLite database in the project (.dvc/tmp/prefect/prefect.db), its log beside it, and
its address in server.json, where later commands find it and use it while it runs. `imgpipe server stop` ends it.

Only its owner may use it: every server imgpipe starts (this one, and the temporary one of a single command, which
dies with that command) requires Prefect's API auth string, a random secret kept in .dvc/tmp/prefect/api-auth
(mode 0600, in a folder of mode 0700); imgpipe gives it to its own clients (flows/prefect_setup.py). server.json
names the project it belongs to, so that a copy of the project (`cp -a`) never uses or stops the original's server.
"""

from __future__ import annotations

import atexit
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

from flows.prefect_home import auth_string, home, make_home

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


# a `prefect server start` that gets SIGTERM when the process that started it dies, even by kill -9 (Linux)
_DIE_WITH_PARENT = """import ctypes, os, signal, sys
parent = int(sys.argv[1])
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG; kept through the exec below
if os.getppid() != parent:  # the parent died before the line above
    sys.exit(1)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


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


def _read_record(root: Path) -> dict | None:
    try:
        state = json.loads(_state_file(root).read_text(encoding="utf-8"))
        return state if isinstance(state, dict) else None
    except (OSError, ValueError):
        return None


def _server_of(state: dict) -> LocalServer | None:
    try:
        return LocalServer(int(state["pid"]), str(state["api_url"]), Path(state["log"]))
    except (ValueError, KeyError, TypeError):
        return None


def _read_state(root: Path) -> LocalServer | None:
    """The server that server.json records for this very project: a copy of the project (`cp -a`) holds the
    original's record, which names the original's folder and is not this project's."""
    state = _read_record(root)
    if state is None or state.get("root") != str(root.resolve()):
        return None
    return _server_of(state)


def _unowned_legacy_server(root: Path) -> LocalServer | None:
    """A server recorded by an imgpipe that neither named the project nor asked for the secret, still running."""
    state = _read_record(root)
    if state is None or "root" in state:
        return None
    server = _server_of(state)
    if server is None or not _alive(server.pid) or not _is_prefect_server(server.pid):
        return None
    return server


def running(root: Path) -> LocalServer | None:
    """The project's server when it is up and answering, else None."""
    server = _read_state(root)
    if server is None or not _alive(server.pid) or not _healthy(server.api_url):
        return None
    return server


def _free_port(preferred: int = PREFERRED_PORT) -> int:
    for port in (preferred, 0):
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
    secret = auth_string(root)
    environment["PREFECT_SERVER_API_AUTH_STRING"] = secret  # the server refuses a request without it (401)
    environment["PREFECT_API_AUTH_STRING"] = secret  # and its own services send it
    environment.setdefault("PREFECT_HOME", str(home(root)))
    environment.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not any(name in environment for name in ("PREFECT_SERVER_DATABASE_CONNECTION_URL",
                                                "PREFECT_API_DATABASE_CONNECTION_URL")):
        environment["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{home(root) / 'prefect.db'}"
    return environment


def _launch(root: Path, temporary: bool) -> tuple[subprocess.Popen, LocalServer]:
    make_home(root)
    port = _free_port(0 if temporary else PREFERRED_PORT)  # a command's own server leaves 4200 to the project's
    log = home(root) / ("temporary-server.log" if temporary else "server.log")
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    environment = _server_environment(root)
    if temporary:
        # as Prefect's own temporary server: the services a command needs (no scheduler), no UI
        environment["PREFECT__SERVER_EPHEMERAL"] = "1"
        if sys.platform.startswith("linux"):
            command = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *command[1:]]
    descriptor = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "ab") as output:
        started = datetime.datetime.now().isoformat(timespec="seconds")
        output.write(f"\n--- {started} {' '.join(command[command.index('-m'):])}\n".encode())
        output.flush()
        # its own session: a Ctrl-C in the terminal that started it stops the command, not the server
        process = subprocess.Popen(command, cwd=root, env=environment, stdin=subprocess.DEVNULL,
                                   stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    return process, LocalServer(process.pid, f"http://127.0.0.1:{port}/api", log)


def _start(root: Path, timeout: float, temporary: bool = False) -> LocalServer:
    process, server = _launch(root, temporary)
    log = server.log
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
    if temporary:
        return server
    from tasks import atomic  # here: every imgpipe command imports this module, and tasks.atomic imports pandas

    atomic.write_json(_state_file(root), {"pid": server.pid, "api_url": server.api_url, "log": str(log),
                                          "root": str(root.resolve())})
    return server


def start_temporary(root: Path, timeout: float) -> LocalServer:
    """A server for this command alone, asking for the project's secret: stopped when the command exits, and
    (on Linux) when it is killed outright, so that a kill -9 leaves no server behind; server.json never names it."""
    with filelock.FileLock(str(make_home(root) / "server.lock"), timeout=timeout + 30):
        try:
            server = _start(root, timeout, temporary=True)
        except ServerExited:  # its port, free a moment ago, was taken since: once more on another
            server = _start(root, timeout, temporary=True)
    atexit.register(_terminate, server.pid)
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
    with filelock.FileLock(str(make_home(root) / "server.lock"), timeout=timeout + 30):
        server = running(root)
        if server is not None:
            return server, False
        legacy = _unowned_legacy_server(root)
        if legacy is not None:  # it lets anyone on this machine in: stopped, and one that asks for the secret started
            _terminate(legacy.pid)
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
        server = _read_state(root) or _unowned_legacy_server(root)  # never the server of the project copied
        if server is not None and _alive(server.pid) and (_healthy(server.api_url) or _is_prefect_server(server.pid)):
            _terminate(server.pid)
        else:
            server = None
        _state_file(root).unlink(missing_ok=True)
    return server
