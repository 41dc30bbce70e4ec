"""The search space in `tune.space` and the trials planned from it, checked against params; reads nothing.

Each key of `tune.space` is a dotted params key (`train.learning_rate`) with either a list of values or a range
`{low, high, scale: linear | log, count}`. A range over an integer key draws integers. With `count`, a range
becomes that many values spaced evenly on its scale (what `method: grid` needs). Every value, and every planned
trial as a whole, is checked by the same typed models as params.yaml, so a trial that would fail on a bad value
is refused before anything is queued, with a one-line error naming the key.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.config import apply_overrides, parse_config
from tasks.params import Config, TuneParams

logger = logging.getLogger(__name__)

RANGE_KEYS = ("low", "high", "scale", "count")
SIGNIFICANT_DIGITS = 4  # drawn numbers are rounded so that they read well in `dvc exp show` and on the command line
MAX_DRAWS_PER_TRIAL = 200  # random: attempts to find a trial unlike the others before the space counts as exhausted


@dataclass(frozen=True)
class Dimension:
    """One swept params key: a list of values, or a numeric range."""

    key: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    scale: str = "linear"
    count: int | None = None
    integer: bool = False
    in_file: bool = True  # whether params.yaml spells the key out (else it has the model's default)

    @property
    def is_range(self) -> bool:
        return self.low is not None

    def grid_values(self) -> tuple[Any, ...]:
        """The values a grid takes: the list, or `count` values spaced evenly on the range's scale."""
        if not self.is_range:
            return self.values
        assert self.count is not None and self.low is not None and self.high is not None
        if self.scale == "log":
            points = np.geomspace(self.low, self.high, self.count)
        else:
            points = np.linspace(self.low, self.high, self.count)
        return tuple(dict.fromkeys(self._number(float(point)) for point in points))  # integers may repeat

    def draw(self, generator: np.random.Generator) -> Any:
        """One value at random: from the list, or uniformly on the range's scale."""
        if not self.is_range or self.count is not None:
            values = self.grid_values()
            return values[int(generator.integers(len(values)))]
        assert self.low is not None and self.high is not None
        if self.scale == "log":
            value = math.exp(generator.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = generator.uniform(self.low, self.high)
        return self._number(value)

    def _number(self, value: float) -> int | float:
        if self.integer:
            assert self.low is not None and self.high is not None
            return int(min(max(round(value), math.ceil(self.low)), math.floor(self.high)))
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def lookup(values: dict[str, Any], dotted_key: str) -> tuple[bool, Any]:
    """Whether the nested mapping `values` has the dotted key, and its value there."""
    node: Any = values
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _check_value(values: dict[str, Any], key: str, value: Any) -> None:
    """Refuse a value that the params models reject for `key`, with their reason."""
    try:
        parse_config(apply_overrides(values, {key: value}))
    except ValueError as error:
        reason = str(error).removeprefix("invalid params: ")
        raise ValueError(f"tune.space.{key}: value {value!r} is rejected ({reason})") from None


def _dimension(key: str, spec: Any, values: dict[str, Any], defaults: dict[str, Any], method: str) -> Dimension:
    prefix = f"tune.space.{key}"
    in_file, current = lookup(values, key)
    known, default = lookup(defaults, key)
    if not (in_file or known) or key.split(".")[0] == "tune":
        raise ValueError(f"{prefix}: params.yaml has no key {key}; check its spelling against params.yaml")
    current = current if in_file else default
    if isinstance(current, dict):
        raise ValueError(f"{prefix}: {key} is a section; sweep one of its keys ({key}.{next(iter(current), 'KEY')})")
    if isinstance(spec, list | tuple):
        if not spec:
            raise ValueError(f"{prefix}: the list of values is empty; give at least one value")
        for value in spec:
            _check_value(values, key, value)
        return Dimension(key, values=tuple(dict.fromkeys(spec)), in_file=in_file)
    if not isinstance(spec, dict):
        raise ValueError(f"{prefix} must be a list of values or a range {{low: A, high: B, scale: linear|log}}, "
                         f"got {spec!r}")
    unknown = sorted(set(spec) - set(RANGE_KEYS))
    if unknown or not {"low", "high"} <= set(spec):
        raise ValueError(f"{prefix}: a range takes low, high and optionally scale (linear|log) and count; got keys "
                         f"{', '.join(map(str, spec))}")
    if isinstance(current, bool) or not isinstance(current, int | float):
        raise ValueError(f"{prefix}: a range needs a numeric key, and {key} is {current!r}; give a list of values")
    low, high, scale, count = spec["low"], spec["high"], spec.get("scale", "linear"), spec.get("count")
    for name, bound in (("low", low), ("high", high)):
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise ValueError(f"{prefix}.{name} must be a number, got {bound!r}")
    if scale not in ("linear", "log"):
        raise ValueError(f"{prefix}.scale must be linear or log, got {scale!r}")
    if not low < high:
        raise ValueError(f"{prefix}: low ({low}) must be < high ({high})")
    if scale == "log" and low <= 0:
        raise ValueError(f"{prefix}: a log range needs low > 0, got {low}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 2):
        raise ValueError(f"{prefix}.count must be an integer >= 2, got {count!r}")
    if method == "grid" and count is None:
        raise ValueError(f"{prefix}: method grid needs a count for a range (how many values, spaced on its scale)")
    integer = isinstance(current, int)
    if integer and math.ceil(low) > math.floor(high):
        raise ValueError(f"{prefix}: {key} is an integer and no integer lies between {low} and {high}")
    for bound in (math.ceil(low), math.floor(high)) if integer else (low, high):
        _check_value(values, key, bound)
    return Dimension(key, low=float(low), high=float(high), scale=scale, count=count, integer=integer,
                     in_file=in_file)


def parse_space(tune: TuneParams, values: dict[str, Any]) -> list[Dimension]:
    """The swept keys of `tune.space`, each checked against params.yaml `values` and the params models."""
    if not tune.space:
        raise ValueError("tune.space is empty; name at least one params key with a list of values or a range, "
                         "e.g. train.learning_rate: {low: 0.0005, high: 0.01, scale: log}")
    defaults = Config().model_dump(mode="json", by_alias=True)
    return [_dimension(str(key), spec, values, defaults, tune.method) for key, spec in tune.space.items()]


def _check_trial(values: dict[str, Any], number: int, trial: dict[str, Any]) -> None:
    try:
        parse_config(apply_overrides(values, trial))
    except ValueError as error:
        settings = ", ".join(f"{key}={value!r}" for key, value in trial.items())
        reason = str(error).removeprefix("invalid params: ")
        raise ValueError(f"tune.space: trial {number} ({settings}) is rejected: {reason}") from None


def plan_trials(tune: TuneParams, dimensions: list[Dimension], values: dict[str, Any]) -> list[dict[str, Any]]:
    """The trials of a sweep, in order: every combination (grid) or `tune.trials` distinct draws (random).

    At most `tune.max_trials`: a larger grid is cut to a seeded random subset (kept in grid order).
    """
    if tune.method == "grid":
        combinations = list(itertools.product(*(dimension.grid_values() for dimension in dimensions)))
        if len(combinations) > tune.max_trials:
            logger.warning("tune: the grid has %d combinations and tune.max_trials is %d; running %d of them, "
                           "chosen with tune.seed", len(combinations), tune.max_trials, tune.max_trials)
            chosen = np.random.default_rng(tune.seed).choice(len(combinations), tune.max_trials, replace=False)
            combinations = [combinations[index] for index in sorted(chosen)]
    else:
        wanted = min(tune.trials, tune.max_trials)
        if tune.trials > tune.max_trials:
            logger.warning("tune: tune.trials is %d but tune.max_trials is %d; drawing %d", tune.trials,
                           tune.max_trials, wanted)
        generator = np.random.default_rng(tune.seed)
        combinations = []
        attempts = 0
        while len(combinations) < wanted and attempts < wanted * MAX_DRAWS_PER_TRIAL:
            attempts += 1
            combination = tuple(dimension.draw(generator) for dimension in dimensions)
            if combination not in combinations:
                combinations.append(combination)
        if len(combinations) < wanted:
            logger.warning("tune: the space holds only %d distinct trials; running those", len(combinations))
    trials = [{dimension.key: value for dimension, value in zip(dimensions, combination)}
              for combination in combinations]
    for number, trial in enumerate(trials, start=1):
        _check_trial(values, number, trial)
    return trials
