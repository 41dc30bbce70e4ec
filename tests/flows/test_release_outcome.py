"""The training flow's release step (issue 27 item 13): a candidate that is the very model in production (params
put back with `git checkout params.yaml` after a refused `-S`, so DVC rebuilt the same model) is "Nothing to do",
never a failed promotion ("already the production model") nor, on the run after, "Promoted"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flows import journal, training
from tasks.config import load_config
from tests.conftest import PROJECT_ROOT


def _model_folder(folder: Path, version: str) -> None:
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"weights")
    (folder / "labels.json").write_text(json.dumps(["a", "b"]))
    (folder / "model_card.json").write_text(json.dumps({"version": version}))


def _in_production(paths, version: str) -> None:
    """The production folder holds `version`, and the registry's history (the committed pointer) names it."""
    _model_folder(paths.production, version)
    paths.registry.mkdir(parents=True, exist_ok=True)
    (paths.registry / "history.jsonl").write_text(json.dumps(
        {"action": "promote", "version": version, "forced": False, "reason": "set-up", "requested_by": "test",
         "at": "2026-12-07T00:00:00+00:00", "metrics": None}) + "\n")


@pytest.fixture
def project(tmp_path):
    (tmp_path / ".dvc").mkdir()
    shutil.copy(PROJECT_ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


@pytest.mark.parametrize("decision", ["pass", "fail"])
def test_a_candidate_that_is_production_is_nothing_to_do(project, decision):
    _, paths = load_config(project / "params.yaml")
    _model_folder(paths.candidate, "3f2a1b2c3d4e")
    _in_production(paths, "3f2a1b2c3d4e")
    summary = training.TrainingSummary(repo=str(project), gate={"decision": decision, "promoted": False,
                                                                "sentence": "judged against itself"})
    assert training._release(project, summary, already_judged=False, interrupted=[]) == "Nothing to do"
    assert training._release(project, summary, already_judged=True, interrupted=["promote"]) == "Nothing to do"
    assert "track" not in journal.owed(project)  # nothing to version either


def test_a_killed_runs_promotion_finished_by_recovery_is_still_reported(project):
    _, paths = load_config(project / "params.yaml")
    _model_folder(paths.candidate, "3f2a1b2c3d4e")
    _in_production(paths, "3f2a1b2c3d4e")
    summary = training.TrainingSummary(repo=str(project), gate={"decision": "pass", "promoted": True,
                                                                "sentence": "passed"})
    assert training._release(project, summary, already_judged=True, interrupted=["promote"]) == "Promoted"
    assert training._release(project, summary, already_judged=True, interrupted=[]) == "Unchanged"
