"""The search space: a bad key, value, range or budget is a one-line error naming it; trials are planned as asked."""

import math

import pytest

from tasks.config import load_config, parse_config, read_params
from tasks.params import TuneParams
from tasks.tune import space
from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def values() -> dict:
    return read_params(PROJECT_ROOT / "params.yaml")


def _tune(**settings) -> TuneParams:
    return TuneParams(**settings)


def _error(values: dict, **settings) -> str:
    with pytest.raises(ValueError) as raised:
        space.plan_trials(_tune(**settings), space.parse_space(_tune(**settings), values), values)
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("space_settings, expected", [
    ({}, "tune.space is empty"),
    ({"train.learnig_rate": [0.1]}, "tune.space.train.learnig_rate: params.yaml has no key train.learnig_rate"),
    ({"trian.epochs": [1]}, "tune.space.trian.epochs: params.yaml has no key"),
    ({"tune.trials": [1, 2]}, "tune.space.tune.trials: params.yaml has no key"),
    ({"train": [1]}, "tune.space.train: train is a section"),
    ({"train.epochs": [3, -1]}, "tune.space.train.epochs: value -1 is rejected (train.epochs must be >= 1, got -1)"),
    ({"train.epochs": ["many"]}, "tune.space.train.epochs: value 'many' is rejected (train.epochs must be a valid"),
    ({"train.model": ["simple_cnn", "vgg"]}, "tune.space.train.model: value 'vgg' is rejected (train.model must be"),
    ({"train.dropout": []}, "tune.space.train.dropout: the list of values is empty"),
    ({"train.dropout": "0.1"}, "tune.space.train.dropout must be a list of values or a range"),
    ({"train.dropout": {"low": 0.1}}, "tune.space.train.dropout: a range takes low, high"),
    ({"train.dropout": {"low": 0.1, "high": 0.5, "step": 2}}, "a range takes low, high and optionally"),
    ({"train.dropout": {"low": 0.5, "high": 0.1}}, "tune.space.train.dropout: low (0.5) must be < high (0.1)"),
    ({"train.dropout": {"low": 0.0, "high": 0.5, "scale": "log"}}, "a log range needs low > 0, got 0.0"),
    ({"train.dropout": {"low": 0.1, "high": 0.5, "scale": "cubic"}}, "tune.space.train.dropout.scale must be"),
    ({"train.dropout": {"low": "a", "high": 0.5}}, "tune.space.train.dropout.low must be a number"),
    ({"train.dropout": {"low": 0.1, "high": 1.5}}, "value 1.5 is rejected (train.dropout must be < 1, got 1.5)"),
    ({"train.model": {"low": 1, "high": 2}}, "tune.space.train.model: a range needs a numeric key"),
    ({"train.width": {"low": 8.2, "high": 8.7}}, "no integer lies between 8.2 and 8.7"),
    ({"train.dropout": {"low": 0.1, "high": 0.5, "count": 1}}, "train.dropout.count must be an integer >= 2"),
])
def test_bad_spaces_are_one_line_errors_naming_the_key(values, space_settings, expected):
    assert expected in _error(values, space=space_settings)


def test_a_grid_needs_a_count_for_each_range(values):
    message = _error(values, method="grid", space={"train.dropout": {"low": 0.1, "high": 0.5}})
    assert "tune.space.train.dropout: method grid needs a count" in message


def test_a_trial_the_params_refuse_as_a_whole_is_named(values):
    message = _error(values, method="grid",
                     space={"preprocess.augment.mixup": [0.2], "preprocess.augment.cutmix": [1.0]})
    assert message.startswith("tune.space: trial 1 (preprocess.augment.mixup=0.2, preprocess.augment.cutmix=1.0)")
    assert "at most one of mixup and cutmix" in message


@pytest.mark.parametrize("section, expected", [
    ({"max_trials": 0}, "tune.max_trials must be >= 1, got 0"),
    ({"trials": 0}, "tune.trials must be >= 1, got 0"),
    ({"max_minutes": 0}, "tune.max_minutes must be > 0, got 0"),
    ({"method": "bayes"}, "tune.method must be one of"),
    ({"objective": "test_macro_f1"}, "tune.objective must be one of"),
    ({"prune": {"after_epoch": 0}}, "tune.prune.after_epoch must be >= 1, got 0"),
    ({"trails": 3}, "tune.trails is not a known key"),
])
def test_bad_budgets_and_settings_name_the_key(section, expected):
    with pytest.raises(ValueError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        parse_config({"tune": section})


def test_the_project_params_plan_a_sweep(values):
    config, _ = load_config(PROJECT_ROOT / "params.yaml")
    dimensions = space.parse_space(config.tune, values)
    trials = space.plan_trials(config.tune, dimensions, values)
    assert len(trials) == min(config.tune.trials, config.tune.max_trials)
    assert all(set(trial) == set(config.tune.space) for trial in trials)


def test_a_grid_takes_every_combination_in_order(values):
    tune = _tune(method="grid", space={"train.dropout": [0.1, 0.3], "train.learning_rate": {
        "low": 0.001, "high": 0.1, "scale": "log", "count": 3}})
    trials = space.plan_trials(tune, space.parse_space(tune, values), values)
    assert [(trial["train.dropout"], trial["train.learning_rate"]) for trial in trials] == [
        (0.1, 0.001), (0.1, 0.01), (0.1, 0.1), (0.3, 0.001), (0.3, 0.01), (0.3, 0.1)]


def test_a_grid_over_the_budget_is_cut_to_a_seeded_subset(values):
    tune = _tune(method="grid", max_trials=4, space={"train.width": [8, 16, 32], "train.depth": [1, 2, 3]})
    first = space.plan_trials(tune, space.parse_space(tune, values), values)
    assert len(first) == 4 and first == space.plan_trials(tune, space.parse_space(tune, values), values)
    every = [(width, depth) for width in (8, 16, 32) for depth in (1, 2, 3)]
    positions = [every.index((trial["train.width"], trial["train.depth"])) for trial in first]
    assert positions == sorted(positions)


def test_random_trials_follow_the_seed_and_stay_in_range(values):
    tune = _tune(trials=12, seed=3, space={"train.learning_rate": {"low": 0.0001, "high": 0.1, "scale": "log"},
                                          "train.width": {"low": 8, "high": 64}})
    trials = space.plan_trials(tune, space.parse_space(tune, values), values)
    assert trials == space.plan_trials(tune, space.parse_space(tune, values), values)
    assert trials != space.plan_trials(_tune(**{**tune.model_dump(), "seed": 4}), space.parse_space(tune, values),
                                       values)
    assert len({tuple(trial.items()) for trial in trials}) == 12
    rates = [trial["train.learning_rate"] for trial in trials]
    assert all(0.0001 <= rate <= 0.1 for rate in rates)
    assert min(rates) < 0.001 and max(rates) > 0.01  # spread over the decades, as a log scale should
    assert all(isinstance(trial["train.width"], int) and 8 <= trial["train.width"] <= 64 for trial in trials)


def test_random_draws_stop_at_the_number_of_distinct_trials(values):
    tune = _tune(trials=10, space={"train.dropout": [0.1, 0.2], "preprocess.augment.horizontal_flip": [False, True]})
    assert len(space.plan_trials(tune, space.parse_space(tune, values), values)) == 4


def test_keys_left_to_their_defaults_can_be_swept(values):
    assert "schedule" not in values["train"]
    tune = _tune(method="grid", space={"train.schedule": ["cosine", "constant"]})
    dimension, = space.parse_space(tune, values)
    assert dimension.in_file is False
    assert [trial["train.schedule"] for trial in space.plan_trials(tune, [dimension], values)] == ["cosine", "constant"]


def test_drawn_numbers_are_rounded_to_read_well(values):
    tune = _tune(trials=5, space={"train.learning_rate": {"low": 0.0001, "high": 0.1, "scale": "log"}})
    for trial in space.plan_trials(tune, space.parse_space(tune, values), values):
        rate = trial["train.learning_rate"]
        assert float(f"{rate:.4g}") == rate and not math.isnan(rate)
