"""Prefect for one project, for every command that runs a flow: its home, its start-up time, and which server.

Call `use_project` before anything imports Prefect (Prefect reads its settings once, when imported). It keeps
Prefect's home (database, results, artifacts' files) in the project, .dvc/tmp/prefect/, unless PREFECT_HOME is
set, so that one project's runs never show in another's; keeps the user's profiles (~/.prefect/profiles.toml)
so that a server configured there is still used; and gives the temporary server a start-up time a busy machine
can meet. The API is, in order: PREFECT_API_URL (environment or profile); the project's own long-lived server
(flows/local_server.py) when it runs, or started when a schedule needs one or a training run asks for it (a
server started once serves every later run: no start-up of 10-20 s each time; IMGPIPE_PREFECT_SERVER=temporary
declines it); else a temporary server of the command's own (one that dies with it), or Prefect's temporary server.
Every server of the project asks for the project's secret (.dvc/tmp/prefect/api-auth, mode 0600), which this sets
as the client's PREFECT_API_AUTH_STRING: no other user of the machine can list or start runs, or read their states.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flows import local_server, prefect_home

SERVER_CHOICE = "IMGPIPE_PREFECT_SERVER"  # "temporary": `imgpipe run` starts no long-lived server (serve still does)
STARTUP_TIMEOUT_SECONDS = 180  # Prefect's default, 20 s, is not enough for a first start on a busy machine
_TIMEOUT_VARIABLE = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"

logger = logging.getLogger(__name__)


def find_project(start: Path) -> Path | None:
    """The imgpipe project holding `start`: the nearest folder at or above it with a .dvc folder."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None


def startup_timeout() -> float:
    try:
        return float(os.environ.get(_TIMEOUT_VARIABLE, STARTUP_TIMEOUT_SECONDS))
    except ValueError:
        raise ValueError(f"{_TIMEOUT_VARIABLE} must be a number of seconds, got "
                         f"{os.environ[_TIMEOUT_VARIABLE]!r}") from None


def _set_environment(root: Path | None) -> None:
    if root is not None and "PREFECT_HOME" not in os.environ:
        user_profiles = Path("~/.prefect/profiles.toml").expanduser()
        if "PREFECT_PROFILES_PATH" not in os.environ and user_profiles.is_file():
            os.environ["PREFECT_PROFILES_PATH"] = str(user_profiles)
        os.environ["PREFECT_HOME"] = str(prefect_home.home(root))
        prefect_home.make_home(root)
    os.environ.setdefault(_TIMEOUT_VARIABLE, str(STARTUP_TIMEOUT_SECONDS))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here, and none wanted


def _configured_api_url() -> str | None:
    from prefect.settings import Settings  # reads the environment and the profile afresh

    return Settings().api.url or None


def _use_secret(root: Path) -> None:
    """The project's secret for the servers this process starts (Prefect's temporary one too) and its clients."""
    secret = prefect_home.auth_string(root)
    os.environ["PREFECT_SERVER_API_AUTH_STRING"] = secret
    os.environ["PREFECT_API_AUTH_STRING"] = secret
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()  # Prefect may have read its settings already


def _use_api(url: str) -> None:
    from prefect.context import refresh_global_settings_context

    os.environ["PREFECT_API_URL"] = url
    refresh_global_settings_context()  # Prefect read its settings when imported


def _project_server_declined() -> bool:
    choice = os.environ.get(SERVER_CHOICE, "").strip().lower()
    if choice not in ("", "project", "temporary"):
        raise ValueError(f"{SERVER_CHOICE} must be project (the default: use the project's long-lived Prefect server, "
                         "started when it is not running) or temporary (a server of the command's own), got "
                         f"{choice!r}")
    return choice == "temporary"


def use_project(root: Path | None, need_scheduler: bool = False, temporary_server: bool = False,
                project_server: bool = False) -> str | None:
    """Set Prefect up for the project at `root` (None: no project; the home is left alone); return the API URL.

    need_scheduler: a schedule will be served, so a temporary server will not do: start the project's server
    when no API is configured. project_server: a flow will run: start the project's server when no API is configured
    and it is not running, so that this command and every later one use it (unless IMGPIPE_PREFECT_SERVER is
    temporary: then as temporary_server). temporary_server: a flow will run: without the project's server, start one
    for this command that stops with it, even when it is killed (Prefect's own would outlive a kill -9).
    Returns None when the command will use Prefect's temporary server.
    """
    if root is not None and not (root / ".dvc").is_dir():
        root = None  # not an imgpipe project (the command will say so): write nothing into it
    _set_environment(root)
    configured = _configured_api_url()
    if configured:
        return configured
    if root is None:
        return None
    _use_secret(root)
    server = local_server.running(root)
    if project_server and _project_server_declined():
        project_server, temporary_server = False, True
    if server is None and (need_scheduler or project_server):
        logger.info("starting the project's Prefect server (database %s)", prefect_home.home(root) / "prefect.db")
        server, started = local_server.ensure(root, startup_timeout())
        if started:  # said once, by the command that started it; later commands just use it
            logger.info("the project's Prefect server (and its UI) is at %s; it keeps running after this command, "
                        "for the next ones (`imgpipe server stop` stops it; %s=temporary before a command keeps "
                        "its server to itself); it asks for the secret in %s", server.ui_url, SERVER_CHOICE,
                        prefect_home.auth_file(root))
        _use_api(server.api_url)
        return server.api_url
    if server is None and temporary_server:
        server = local_server.start_temporary(root, startup_timeout())
        logger.debug("this command's own Prefect server is at %s", server.api_url)
        _use_api(server.api_url)
        return server.api_url
    if server is None:
        return None
    logger.info("using the project's Prefect server at %s", server.ui_url)
    _use_api(server.api_url)
    return server.api_url
