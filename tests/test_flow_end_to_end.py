"""The real training flow (Prefect, DVC, TensorFlow, Great Expectations) in a temporary copy of the repository."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

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
        section, key = dotted_key.split(".", 1)
        values[section][key] = value
    params_file.write_text(yaml.safe_dump(values, sort_keys=False))


def _statuses(summary: dict) -> dict[str, str]:
    return {stage["name"]: stage["status"] for stage in summary["stages"]}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = _copy_repository(tmp_path_factory.mktemp("imgpipe"))
    # the real demo data, shrunk training
    _set_params(repo, {"preprocess.image_size": 16, "train.epochs": 2, "train.width": 8, "train.depth": 2})
    return repo


def test_flow_builds_everything_then_skips_everything(repo, prefect_server):
    from flows.training import training

    first = training(repo=str(repo))
    assert list(_statuses(first)) == ["demo", "ingest", "validate", "preprocess", "train", "evaluate"]
    assert set(_statuses(first).values()) == {"ran"}
    assert first["pushed"] is True
    assert (repo / "data/models/candidate/model.keras").is_file()
    assert (repo / "data/reports/validation/data_docs/index.html").is_file()
    metrics = json.loads((repo / "data/reports/evaluation/metrics.json").read_text())
    assert metrics == first["metrics"] and metrics["test_images"] > 200
    assert len(list((repo / "data/raw").rglob("*.png"))) == 1797
    assert any((repo / ".dvc/remote").rglob("*")), "nothing was pushed to the local remote"

    dvc = [sys.executable, "-m", "dvc"]
    status = subprocess.run([*dvc, "status"], cwd=repo, capture_output=True, text=True, check=True).stdout
    assert "up to date" in status, status  # `dvc repro` would run nothing either
    shown = subprocess.run([*dvc, "metrics", "show", "--json"], cwd=repo, capture_output=True, text=True, check=True)
    assert "accuracy" in shown.stdout

    second = training(repo=str(repo), push=False)
    assert set(_statuses(second).values()) == {"skipped"}

    _set_params(repo, {"train.epochs": 1})
    third = training(repo=str(repo), push=False)
    ran = {name for name, status in _statuses(third).items() if status == "ran"}
    assert ran == {"train", "evaluate"}


def test_a_failing_stage_fails_the_flow_with_its_own_message(repo, prefect_server):
    from flows.stage_runner import StageFailed
    from flows.training import training

    _set_params(repo, {"validate.min_images_per_class": 100000})
    with pytest.raises(StageFailed, match="min_images_per_class"):
        training(repo=str(repo), push=False)
    assert (repo / "data/models/candidate/model.keras").is_file()  # earlier outputs are left alone
