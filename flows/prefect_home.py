"""The project's Prefect folder and its API secret: makes .dvc/tmp/prefect/ (mode 0700) and api-auth (0600) in it.

Every Prefect server imgpipe starts for the project asks for the secret (flows/local_server.py) and imgpipe's
clients send it (flows/prefect_setup.py), so that no other user of the machine can list or start runs.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

AUTH_FILE_NAME = "api-auth"


def home(root: Path) -> Path:
    """Where this project keeps Prefect's files: inside the project, under a folder git and DVC already ignore."""
    return root / ".dvc" / "tmp" / "prefect"


def make_home(root: Path) -> Path:
    """The project's Prefect folder, made if missing, readable by its owner only (database, logs, the secret)."""
    folder = home(root)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def auth_file(root: Path) -> Path:
    return home(root) / AUTH_FILE_NAME


def auth_string(root: Path) -> str:
    """The project's API secret (made on first use): every server imgpipe starts asks for it, its clients send it."""
    file = auth_file(root)
    make_home(root)
    if not file.is_file():
        temporary = file.with_name(f".{file.name}.{os.getpid()}.partial")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as output:
            output.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(temporary, file)  # never replaces a secret another command made meanwhile
        except FileExistsError:
            pass
        finally:
            temporary.unlink(missing_ok=True)
    details = file.lstat()
    if details.st_uid != os.getuid() or not file.is_file():
        raise ValueError(f"{file}: the project's Prefect API secret is not a file of yours; remove it and run again")
    if details.st_mode & 0o077:
        os.chmod(file, 0o600)
    secret = file.read_text(encoding="ascii").strip()
    if len(secret) < 32:
        raise ValueError(f"{file}: the project's Prefect API secret is too short; remove it and run again")
    return secret
