"""A real sweep through DVC's experiment queue (tiny images, 2 trials of 2 epochs) in a temporary copy of the project.

The tests of this module share one copy and run in order: a sweep killed with SIGKILL and resumed; the same sweep
as a Prefect flow; the winner applied and gated by the training flow; bad input.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import write_class_folders
from tests.flows.test_end_to_end import NO_EXPORTS, _copy_repository, _git, _set_params, _statuses

IMGPIPE = str(Path(sys.executable).parent / "imgpipe")
LEARNING_RATES = [0.001, 0.01]


def _environment() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2",
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def _imgpipe(repo: Path, *arguments: str, timeout: float = 900) -> subprocess.CompletedProcess:
    log = repo.parent / f"imgpipe-{time.monotonic_ns()}.log"  # a file: an unread pipe would stall DVC's worker
    with log.open("w") as handle:
        code = subprocess.run([IMGPIPE, *arguments, "--repo", str(repo)], env=_environment(), stdout=handle,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False).returncode
    return subprocess.CompletedProcess(arguments, code, log.read_text(), "")


def _sweep(repo: Path) -> dict:
    return json.loads((repo / "data/reports/tuning/sweep.json").read_text())


def _experiments(repo: Path) -> dict[str, dict]:
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=repo, capture_output=True,
                           text=True, check=True, env=_environment())
    return {entry["name"]: entry for commit in json.loads(shown.stdout) for entry in commit.get("experiments") or []}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = _copy_repository(tmp_path_factory.mktemp("imgpipe-tune"))
    source = write_class_folders(repo.parent / "source", per_class=12)
    _set_params(repo, {
        "ingest.source": str(source), "validate.min_images_per_class": 3, "preprocess.image_size": 16,
        "preprocess.val_fraction": 0.25, "preprocess.test_fraction": 0.25, "train.epochs": 2, "train.batch_size": 8,
        "train.width": 4, "train.depth": 2, "evaluate.gate.min_accuracy": 0.0, "evaluate.gate.min_macro_f1": 0.0,
        "tune.method": "grid", "tune.space": {"train.learning_rate": LEARNING_RATES}, **NO_EXPORTS})
    _git(repo, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "--quiet", "-am", "tiny")
    return repo


def test_a_sweep_killed_with_sigkill_resumes_and_every_trial_is_a_dvc_experiment(repo):
    log = (repo.parent / "killed.log").open("w")
    first = subprocess.Popen([IMGPIPE, "tune", "--repo", str(repo)], env=_environment(), stdout=log,
                             stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    done: list[dict] = []
    while time.time() < deadline and not done and first.poll() is None:
        time.sleep(2)
        if (repo / "data/reports/tuning/sweep.json").is_file():
            done = [trial for trial in _sweep(repo)["trials"] if trial["status"] == "done"]
    assert done, (repo.parent / "killed.log").read_text()[-3000:]
    if first.poll() is None:
        os.kill(first.pid, signal.SIGKILL)
    first.wait()
    survivor = done[0]

    resumed = _imgpipe(repo, "tune")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "resuming sweep" in resumed.stdout
    sweep = _sweep(repo)
    trials = sweep["trials"]
    assert [trial["status"] for trial in trials] == ["done", "done"]
    assert [trial["params"]["train.learning_rate"] for trial in trials] == LEARNING_RATES
    assert next(trial for trial in trials if trial["name"] == survivor["name"]) == survivor  # not run again
    # trials took every stage before train from the workspace and DVC's cache: none ran ingest or preprocess
    assert [trial["stages_run"] for trial in trials] == [["train"], ["train"]]
    assert all(0 <= trial["val_accuracy"] <= 1 and trial["epochs_run"] == 2 for trial in trials)

    # ordinary DVC experiments: exactly one per trial, with their params and metrics, comparable with plots diff
    shown = _experiments(repo)
    assert sorted(shown) == sorted(trial["name"] for trial in trials)
    for trial in trials:
        data = shown[trial["name"]]["revs"][0]["data"]
        assert data["params"]["params.yaml"]["data"]["train"]["learning_rate"] == trial["params"]["train.learning_rate"]
        assert "val_accuracy" in data["metrics"]["data/reports/training/live/metrics.json"]["data"]
    diff = subprocess.run([sys.executable, "-m", "dvc", "plots", "diff", *(trial["name"] for trial in trials),
                           "--json"], cwd=repo, capture_output=True, text=True, env=_environment(), check=False)
    assert diff.returncode == 0, diff.stderr[-2000:]
    # the trials' training curves, train and validation on one titled chart each (dvc.yaml's top-level plots)
    assert "Loss per epoch (train and validation)" in diff.stdout and "Accuracy per epoch" in diff.stdout

    table = pd.read_parquet(repo / "data/reports/tuning/trials.parquet")
    assert list(table["trial"]) == [trial["name"] for trial in trials]
    assert sorted(table["rank"].tolist()) == [1, 2] and table["objective"].notna().all()
    assert (repo / "data/reports/tuning/objective.png").is_file()
    assert f"best: {table.loc[table['rank'] == 1, 'trial'].iloc[0]}" in resumed.stdout


def test_the_sweep_as_a_prefect_flow_reports_the_finished_trials(repo, prefect_server):
    from flows.tune import tune

    summary = tune(repo=str(repo))
    assert summary["counts"] == {"done": 2}
    assert summary["best"]["trial"] in {trial["name"] for trial in _sweep(repo)["trials"]}


def test_the_applied_winner_is_evaluated_and_gated_by_the_next_run(repo, prefect_server):
    from flows.training import training

    applied = _imgpipe(repo, "tune", "--apply")
    assert applied.returncode == 0, applied.stdout[-3000:]
    assert "applied to the workspace" in applied.stdout
    best = pd.read_parquet(repo / "data/reports/tuning/trials.parquet").query("rank == 1").iloc[0]
    rate = float(best["train.learning_rate"])
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["learning_rate"] == rate
    card = json.loads((repo / "data/models/candidate/model_card.json").read_text())
    assert card["params"]["train"]["learning_rate"] == rate

    state = training(repo=str(repo), push=False, return_state=True)
    summary = state.result()
    statuses = _statuses(summary)
    assert statuses["train"] == "skipped" and statuses["evaluate"] == "ran"  # the applied model, not a new one
    assert state.name in ("Promoted", "Refused")
    gate = json.loads((repo / "data/reports/evaluation/gate.json").read_text())
    assert gate["candidate"]["version"] == card["version"]
    assert (repo / "data/reports/evaluation/metrics.json").is_file()


def test_bad_input_is_one_line_naming_the_key(repo):
    params_before = (repo / "params.yaml").read_text()
    try:
        _set_params(repo, {"tune.space": {"train.learnig_rate": [0.1]}})
        typo = _imgpipe(repo, "tune", timeout=300)
        assert typo.returncode == 1
        errors = [line for line in typo.stdout.splitlines() if line.startswith("imgpipe: error:")]
        assert errors == [("imgpipe: error: tune.space.train.learnig_rate: params.yaml has no key "
                           "train.learnig_rate; check its spelling against params.yaml")]
        _set_params(repo, {"tune.space": {"train.learning_rate": LEARNING_RATES}, "tune.max_trials": 0})
        budget = _imgpipe(repo, "tune", timeout=300)
        assert budget.returncode == 1 and "tune.max_trials must be >= 1, got 0" in budget.stdout
    finally:
        (repo / "params.yaml").write_text(params_before)
    jobs = _imgpipe(repo, "tune", "--jobs", "0", timeout=300)
    assert jobs.returncode == 1 and "imgpipe: error: --jobs must be >= 1, got 0" in jobs.stdout
