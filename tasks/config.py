"""Reads params.yaml (and `-S key=value` style overrides) into the typed Config and the Paths beside it; writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tasks.params import Config
from tasks.paths import Paths

PARAMS_FILE_NAME = "params.yaml"


_MESSAGES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "extra_forbidden": "is not a known key; check its spelling against params.yaml",
    "missing": "is required",
    "literal_error": "must be one of {expected}",
}


def _plain(value: Any) -> Any:
    """1.0 -> 1, so that limits read as written in the model."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "params"
    template = _MESSAGES.get(error["type"])
    if template is not None:
        reason = template.format(**{name: _plain(value) for name, value in error.get("ctx", {}).items()})
    else:
        reason = error["msg"].removeprefix("Value error, ").replace("Input should", "must")
        reason = reason[0].lower() + reason[1:] if reason else reason
    if error["type"] in ("extra_forbidden", "missing"):
        return f"{key} {reason}"
    if isinstance(error["input"], dict):  # a check across keys of one section
        return f"{key}: {reason}"
    return f"{key} {reason}, got {error['input']!r}"


def parse_config(values: dict[str, Any]) -> Config:
    """Validate a params mapping; a bad value raises ValueError naming every offending dotted key."""
    if not isinstance(values, dict):
        raise ValueError(f"params must be a mapping of sections, got {type(values).__name__}")
    try:
        return Config.model_validate(values)
    except ValidationError as error:
        problems = [_describe(item) for item in error.errors()]
        raise ValueError("invalid params: " + "; ".join(problems)) from None


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of params with dotted-key overrides (`train.epochs=3`) applied, as `dvc exp run -S` does."""
    result = yaml.safe_load(yaml.safe_dump(values)) or {}
    for dotted_key, value in overrides.items():
        node = result
        *parents, leaf = dotted_key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {dotted_key}: {part} is not a section")
            node = child
        node[leaf] = value
    return result


def read_params(params_file: Path) -> dict[str, Any]:
    if not params_file.is_file():
        raise ValueError(f"{params_file}: params file not found; run from the project root or pass its path")
    try:
        values = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{params_file}: not valid YAML: {error}") from None
    return values or {}


def load_config(params_file: Path | None = None, overrides: dict[str, Any] | None = None) -> tuple[Config, Paths]:
    """Load params.yaml (default: the one in the current folder) into a Config and the Paths beside it."""
    params_file = Path(params_file or Path.cwd() / PARAMS_FILE_NAME).resolve()
    values = read_params(params_file)
    if overrides:
        values = apply_overrides(values, overrides)
    return check_values(values, params_file)


def check_values(values: dict[str, Any], params_file: Path) -> tuple[Config, Paths]:
    """Every check that loading `values` as `params_file` makes (keys, ranges and the paths.* folders), without
    reading or writing anything: a ValueError naming the file and the key."""
    try:
        config = parse_config(values)
        return config, Paths(config.paths, params_file.parent)
    except ValueError as error:
        raise ValueError(f"{params_file}: {error}") from None


class ArgumentError(ValueError):
    """A bad argument to a stage or command function (not a params.yaml key).

    The message names arguments in backticks (`max_pixels`), as the Python caller and the Prefect flow know them;
    the command line spells each as its flag (flows/cli_flags.py).
    """
