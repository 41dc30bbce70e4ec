"""Ranking, the trials table and its picture, the sweep file, and the median rule for stopping hopeless trials."""

import json

import pandas as pd
import pytest

from tasks.tune import plots, pruning, results, state


def _sweep(trials: list[state.Trial]) -> state.Sweep:
    return state.Sweep(sweep_id="abcd1234", baseline="0" * 40, target="train", upstream=["preprocess"],
                       single_item=True, copy_paths=[], tune={"space": {"train.learning_rate": {
                           "low": 0.001, "high": 0.1, "scale": "log"}}}, trials=trials)


def _done(name: str, rate: float, accuracy: float, loss: float) -> state.Trial:
    return state.Trial(name, {"train.learning_rate": rate, "train.model": "simple_cnn"}, status="done",
                       val_accuracy=accuracy, val_loss=loss, epoch=2, epochs_run=3, train_seconds=4.0,
                       started=100.0, finished=130.0, stages_run=["train"], experiment="f" * 40,
                       history={"val_loss": [2.0, loss, loss + 0.1], "val_accuracy": [0.1, accuracy, accuracy]})


@pytest.fixture
def sweep() -> state.Sweep:
    return _sweep([
        _done("t-01", 0.001, 0.80, 0.60),
        state.Trial("t-02", {"train.learning_rate": 0.1, "train.model": "simple_cnn"}, status="failed",
                    note="ValueError: boom"),
        _done("t-03", 0.01, 0.90, 0.50),
        _done("t-04", 0.003, 0.90, 0.40),  # ties t-03 on accuracy, lower loss
        state.Trial("t-05", {"train.learning_rate": 0.05, "train.model": "simple_cnn"}, status="stopped",
                    val_accuracy=0.2, note="stopped after epoch 1"),
        state.Trial("t-06", {"train.learning_rate": 0.02, "train.model": "simple_cnn"}, status="skipped"),
    ])


def test_trials_rank_by_the_objective_with_ties_broken_by_the_other_metric(sweep):
    assert [trial.name for trial in results.ranked(sweep, "val_accuracy")] == ["t-04", "t-03", "t-01"]
    assert [trial.name for trial in results.ranked(sweep, "val_loss")] == ["t-04", "t-03", "t-01"]
    sweep.trials[2].val_loss = 0.3
    assert results.best(sweep, "val_accuracy").name == "t-03"
    assert results.best(_sweep([sweep.trials[1]]), "val_accuracy") is None


def test_the_table_has_a_row_per_trial_and_a_column_per_key(sweep, tmp_path):
    frame = results.table(sweep, "val_accuracy")
    assert list(frame["trial"]) == [trial.name for trial in sweep.trials]
    assert {"train.learning_rate", "train.model", "objective", "stages_run", "experiment", "note"} <= set(frame)
    best = frame[frame["rank"] == 1].iloc[0]
    assert best["trial"] == "t-04" and best["objective"] == 0.9 and best["seconds"] == 30.0
    assert frame.loc[frame["trial"] == "t-02", "rank"].isna().all()
    results.write_table(tmp_path / "trials.parquet", frame)
    assert pd.read_parquet(tmp_path / "trials.parquet")["trial"].tolist() == frame["trial"].tolist()
    text = results.format_table(frame, ["train.learning_rate"])
    assert text.splitlines()[1].split()[:3] == ["1", "t-04", "done"]
    assert "failed" in text and "skipped" in text


def test_the_objective_plot_draws_numbers_and_categories(sweep, tmp_path):
    frame = results.table(sweep, "val_accuracy")
    path = tmp_path / "objective.png"
    plots.objective_plot(frame, ["train.learning_rate", "train.model"], {"train.learning_rate"}, "val_accuracy", path)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_the_sweep_file_round_trips_and_a_broken_one_says_what_to_do(sweep, tmp_path):
    path = tmp_path / "sweep.json"
    state.save(path, sweep)
    assert state.load(path) == sweep
    assert not list(tmp_path.glob(".*partial"))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="sweep.json: not valid JSON.*imgpipe tune with `restart`"):
        state.load(path)
    path.write_text(json.dumps({"version": 0}))
    assert state.load(path) is None
    assert state.load(tmp_path / "missing.json") is None


def test_a_sweep_is_named_by_what_its_trials_depend_on():
    tune = {"method": "random", "trials": 4, "space": {"train.dropout": [0.1]}, "max_minutes": 5,
            "prune": {"after_epoch": None}, "objective": "val_accuracy"}
    name = state.sweep_id(tune, {"train": {"epochs": 3}}, "abc")
    assert name == state.sweep_id({**tune, "max_minutes": 50, "objective": "val_loss",
                                   "prune": {"after_epoch": 2}}, {"train": {"epochs": 3}}, "abc")
    assert name != state.sweep_id({**tune, "trials": 5}, {"train": {"epochs": 3}}, "abc")
    assert name != state.sweep_id(tune, {"train": {"epochs": 4}}, "abc")
    assert name != state.sweep_id(tune, {"train": {"epochs": 3}}, "abd")
    assert name != state.sweep_id(tune, {"train": {"epochs": 3}}, "abc", nonce="restart")


@pytest.mark.parametrize("values, objective, expected", [
    ([0.5, 0.55], "val_accuracy", "stopped after epoch 2: val_accuracy 0.55 was worse than the median 0.7"),
    ([0.5, 0.75], "val_accuracy", ""),
    ([0.5], "val_accuracy", ""),  # not at epoch 2 yet
    ([2.0, 1.9, 0.1], "val_loss", "stopped after epoch 2: val_loss 1.9 was worse than the median 1.2"),
    ([2.0, 1.0], "val_loss", ""),
])
def test_the_median_rule(values, objective, expected):
    earlier = {"val_accuracy": [[0.6, 0.7, 0.9], [0.4, 0.6], [0.8, 0.7]],
               "val_loss": [[1.5, 1.2], [1.1, 1.4], [2, 1.3]]}
    assert pruning.is_hopeless(values, earlier[objective], 2, 3, objective).startswith(expected)
    if expected:
        assert "of 3 earlier trials" in pruning.is_hopeless(values, earlier[objective], 2, 3, objective)


def test_the_median_rule_waits_for_enough_earlier_trials():
    assert pruning.is_hopeless([0.1, 0.1], [[0.9, 0.9], [0.8], [0.7, 0.7]], 2, 3, "val_accuracy") == ""
    assert pruning.is_hopeless([0.1, 0.1], [[0.9, 0.9], [0.7, 0.7]], 2, 2, "val_accuracy") != ""


def test_a_running_trials_epochs_come_from_dvclive(tmp_path):
    live = tmp_path / "live"
    assert pruning.read_live(live, "val_loss") == []
    folder = live / "plots/metrics"  # dvclive's files of val_loss and val_accuracy (tasks/train/callbacks.py)
    folder.mkdir(parents=True)
    (folder / "val_loss.tsv").write_text("step\tval_loss\n0\t2.5\n1\t2.25\n2\t")  # the last row half-written
    (folder / "val_accuracy.tsv").write_text("step\tval_accuracy\n0\t0.25\n")
    assert pruning.read_live(live, "val_loss") == [2.5, 2.25]
    assert pruning.read_live(live, "val_accuracy") == [0.25]
