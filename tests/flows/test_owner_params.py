"""Params come from the owner only (issue 27 items 4 and 14): the training flow takes none over Prefect's API, and
`imgpipe run -S` checks every change, the paths.* folders included, before params.yaml is written."""

from __future__ import annotations

import argparse
import shutil

import pytest

from flows import cli, owner_params
from tasks import params_file
from tests.conftest import PROJECT_ROOT


@pytest.fixture
def project(tmp_path):
    (tmp_path / ".dvc").mkdir()
    shutil.copy(PROJECT_ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def _run_arguments(project, *assignments: str) -> argparse.Namespace:
    return argparse.Namespace(repo=str(project), set_param=list(assignments), no_push=True, lock_timeout=0.0,
                              commit=False)


@pytest.mark.parametrize("assignment, message", [
    ("paths.raw=/", "paths.raw"),
    ("paths.models=.", "paths.models"),
    ("train.epochs=-1", "train.epochs must be >= 1"),
])
def test_a_refused_change_leaves_params_yaml_as_it_was(project, assignment, message):
    before = (project / "params.yaml").read_bytes()
    with pytest.raises(ValueError, match=message):
        params_file.write(project / "params.yaml", params_file.parse_assignments([assignment]))
    with pytest.raises(ValueError, match=message):
        cli._run(_run_arguments(project, "train.epochs=3", assignment))
    assert (project / "params.yaml").read_bytes() == before


def test_the_owners_change_is_written_by_the_command_before_the_flow(project):
    changed = owner_params.write(str(project), params_file.parse_assignments(["train.epochs=3"]), 0.0)
    assert changed and changed[0].startswith("train.epochs: ") and changed[0].endswith("-> 3")
    assert "epochs: 3" in (project / "params.yaml").read_text()


def test_the_training_flow_takes_no_params_over_the_api():
    from flows.training import training

    assert set(training.parameters.properties) == {"repo", "push", "lock_timeout", "commit"}
    with pytest.raises(Exception, match="set_params"):  # what a flow run created over the API would be checked with
        training.validate_parameters({"repo": ".", "set_params": {"ingest.scheduler": "tcp://127.0.0.1:8786"}})


def test_a_deployment_of_the_training_flow_offers_no_params(project):
    from flows.deploy import retrain_deployment

    deployment = retrain_deployment(project, interval_seconds=60)
    assert set(deployment._parameter_openapi_schema.properties) == {"repo", "push", "lock_timeout", "commit"}
    assert deployment.enforce_parameter_schema  # a run with any other parameter is refused by the server


def _tune_arguments(project, *arguments: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["tune", "--repo", str(project), *arguments])


def test_tune_takes_set_param_trials_and_epochs():
    arguments = cli.build_parser().parse_args(["tune", "-S", "train.dropout=0.3", "--set-param", "train.width=16",
                                               "--trials", "4", "--epochs", "2"])
    assert arguments.set_param == ["train.dropout=0.3", "train.width=16"]
    assert (arguments.trials, arguments.epochs) == (4, 2)
    plain = cli.build_parser().parse_args(["tune"])
    assert (plain.set_param, plain.trials, plain.epochs) == (None, None, None)  # params.yaml as it stands


def test_tunes_trials_and_epochs_are_the_tune_sections_trial_count_and_the_epochs_of_a_trial(project):
    overrides = owner_params.check_sweep(project, ["train.dropout=0.3"], trials=4, epochs=2)
    assert overrides == {"train.dropout": 0.3, "tune.trials": 4, "train.epochs": 2}
    # more trials than the budget: the budget follows, so the sweep is not cut short of the number asked
    assert owner_params.check_sweep(project, None, trials=50) == {"tune.trials": 50, "tune.max_trials": 50}
    assert owner_params.check_sweep(project, None) == {}
    with pytest.raises(ValueError, match="train.epochs must be >= 1"):
        owner_params.check_sweep(project, None, epochs=0)
    with pytest.raises(ValueError, match="tune.trials must be >= 1"):
        owner_params.check_sweep(project, None, trials=0)
    with pytest.raises(ValueError, match="grid") as grid:  # a grid draws nothing: the flag would do nothing
        owner_params.check_sweep(project, ["tune.method=grid"], trials=3)
    assert "--trials" in cli.for_command_line(str(grid.value))


def test_tunes_changes_are_written_under_the_lock_before_the_sweep_and_a_refused_one_writes_nothing(project,
                                                                                                  monkeypatch):
    import flows.tune

    seen = []

    def sweep(root, *arguments):
        seen.append((root / "params.yaml").read_text())
        raise RuntimeError("stop here")

    monkeypatch.setattr(flows.tune, "run_sweep", sweep)
    before = (project / "params.yaml").read_bytes()
    with pytest.raises(ValueError, match="train.epochs must be >= 1"):
        cli._tune(_tune_arguments(project, "-S", "train.dropout=0.3", "--epochs", "0"))
    assert (project / "params.yaml").read_bytes() == before and not seen
    with pytest.raises(RuntimeError, match="stop here"):
        cli._tune(_tune_arguments(project, "-S", "train.dropout=0.3", "--trials", "3", "--epochs", "2"))
    values = params_file.read_params(project / "params.yaml")
    assert (values["tune"]["trials"], values["train"]["epochs"], values["train"]["dropout"]) == (3, 2, 0.3)
    assert seen == [(project / "params.yaml").read_text()]  # written before the sweep started
    assert "# `imgpipe tune`" in seen[0]  # the comments kept, as -S keeps them
