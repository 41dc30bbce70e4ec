"""Prefect per project: every command's Prefect home is in the project, with a start-up time a busy machine meets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tasks import model_folder, networks
from tests.conftest import PROJECT_ROOT, write_class_folders

SETTINGS = """
import json, sys
from pathlib import Path
from flows import prefect_setup
root = Path(sys.argv[1]) if sys.argv[1] != "-" else None
api_url = prefect_setup.use_project(root)
from prefect.settings import get_current_settings
settings = get_current_settings()
print(json.dumps({"api_url": api_url, "home": str(settings.home),
                  "startup_timeout": settings.server.ephemeral.startup_timeout_seconds}))
"""


def _no_prefect_environment(home: Path, **variables: str) -> dict[str, str]:
    """This environment without any PREFECT_* variable, and a HOME of its own (where ~/.prefect would go)."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("PREFECT_")}
    return dict(environment, HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                **variables)


def _settings(root: str, environment: dict[str, str]) -> dict:
    child = subprocess.run([sys.executable, "-c", SETTINGS, root], cwd=PROJECT_ROOT, env=environment,
                           capture_output=True, text=True, timeout=300, check=True)
    return json.loads(child.stdout.strip().splitlines()[-1])


def test_prefect_home_is_the_projects_unless_the_user_chose_one(tmp_path):
    project = tmp_path / "project"
    (project / ".dvc").mkdir(parents=True)
    environment = _no_prefect_environment(tmp_path / "home")

    settings = _settings(str(project), environment)
    assert settings == {"api_url": None, "home": str(project / ".dvc/tmp/prefect"), "startup_timeout": 180}

    chosen = _settings(str(project), dict(environment, PREFECT_HOME=str(tmp_path / "mine"),
                                          PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="600"))
    assert chosen == {"api_url": None, "home": str(tmp_path / "mine"), "startup_timeout": 600}

    not_a_project = _settings(str(tmp_path / "elsewhere"), environment)
    assert not_a_project["home"] == str(tmp_path / "home/.prefect") and not (tmp_path / "elsewhere").exists()

    given = _settings(str(project), dict(environment, PREFECT_API_URL="http://127.0.0.1:9/api"))
    assert given["api_url"] == "http://127.0.0.1:9/api"  # a server the user chose is used, whatever runs here


def untrained_model_folder(folder: Path) -> Path:
    """A small untrained model of the three colour classes, saved as train saves one."""
    folder.mkdir()
    model_folder.write(folder, networks.simple_cnn(16, 3, depth=1, width=4, dropout=0.0), ["blue", "green", "red"],
                       {"image_size": 16, "resize": "stretch"}, pd.DataFrame({"epoch": [0], "loss": [1.0]}))
    return folder


def test_predict_on_a_dask_cluster_keeps_prefect_in_the_project(tmp_path):
    project = tmp_path / "project"
    (project / ".dvc").mkdir(parents=True)
    source = write_class_folders(tmp_path / "inbox", per_class=2)
    folder = untrained_model_folder(tmp_path / "model")
    environment = _no_prefect_environment(tmp_path / "home")
    result = subprocess.run([str(Path(sys.executable).parent / "imgpipe"), "predict", str(source), "--model",
                             str(folder), "--workers", "2", "--min-files-per-worker", "0", "--out",
                             str(project / "predictions.parquet")],
                            cwd=project, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (project / ".dvc/tmp/prefect/prefect.db").is_file()  # the run history is the project's
    assert not (tmp_path / "home/.prefect").exists()  # and nothing went to the user's shared home
    assert len(pd.read_parquet(project / "predictions.parquet")) == 6
