"""Writes `-S key=value` changes into params.yaml, keeping its comments and layout; reads and rewrites params.yaml.

The same as `dvc exp run -S`: the value is parsed as YAML (`3`, `0.001`, `null`, `[onnx]`, `/data/pets`), checked
through the typed params (tasks/params.py) before anything is written, and kept in params.yaml afterwards, so
that dvc.lock, the outputs and params.yaml agree (`git diff params.yaml` shows it, `git checkout params.yaml`
undoes it).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import yaml

from tasks import atomic
from tasks.config import apply_overrides, check_values, read_params


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """`["train.epochs=5", "ingest.source=/data/pets"]` -> {"train.epochs": 5, "ingest.source": "/data/pets"}."""
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        key, equals, text = assignment.partition("=")
        key = key.strip()
        if not equals or not key or any(not part for part in key.split(".")):
            raise ValueError(f"`set_param` {assignment!r}: expected KEY=VALUE with a dotted params key, e.g. "
                             "train.epochs=5")
        try:
            overrides[key] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            overrides[key] = text  # not YAML: the text as it is (a path with a colon, say)
    return overrides


def check(params_file: Path, overrides: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Validate the changed params as a whole (a bad key or value raises ValueError naming it); (key, old, new)."""
    values = read_params(params_file)
    check_values(apply_overrides(values, overrides), params_file.resolve())  # the paths.* folders too, as loading
    return [(key, _get(values, key), value) for key, value in overrides.items()]


def _get(values: dict[str, Any], key: str) -> Any:
    """The value at a dotted key; None when params.yaml does not hold it (the default applies)."""
    node: Any = values
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _yaml() -> Any:
    from ruamel.yaml import YAML  # DVC's own YAML library (it rewrites params.yaml for `dvc exp run -S` with it)

    round_trip = YAML()
    round_trip.preserve_quotes = True
    round_trip.width = 4096  # never fold a long line
    round_trip.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null"))
    return round_trip


def write(params_file: Path, overrides: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Check, then write the changes into params.yaml (atomically); (key, old, new) for each key that changed."""
    from ruamel.yaml.comments import CommentedSeq

    changes = [change for change in check(params_file, overrides) if change[1] != change[2]]
    if not changes:
        return []
    round_trip = _yaml()
    document = round_trip.load(params_file.read_text(encoding="utf-8"))
    for key, _, value in changes:
        *parents, leaf = key.split(".")
        node = document
        for part in parents:
            if part not in node:  # a key params.yaml leaves at its default
                node[part] = {}
            node = node[part]
        if isinstance(value, list):  # written on one line, as params.yaml writes lists
            value = CommentedSeq(value)
            value.fa.set_flow_style()
        node[leaf] = value
    text = io.StringIO()
    round_trip.dump(document, text)
    atomic.write_text(params_file, text.getvalue())
    return changes
