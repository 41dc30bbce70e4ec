"""`imgpipe relabel`: accepts the suggested labels of a label issues table into the label table that ingest.labels
names; reads the issues table, the label table (or, without one, the manifest) and params.yaml; writes the label
table (and, when the project had none, ingest.labels in params.yaml).

A person reviews data/reports/data_health/label_issues.csv (or a copy of it), deletes the rows whose suggestion is
wrong, and runs `imgpipe relabel` on the file: each row left gives its image the suggested label. No image folder
is touched; the next run takes the new labels (images already decoded or embedded are not again: both stores are
kept by content).
A project of class folders gets a label table made from its manifest (every image, its label, and its split where
the source gave one), and ingest.labels is set to it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tasks import data_health, label_table, manifest, params_file
from tasks.config import load_config

logger = logging.getLogger(__name__)

NEW_TABLE = "labels.csv"  # in the project folder, when the project has no label table yet


@dataclass
class Relabelled:
    table: Path  # the label table written
    changed: list[str] = field(default_factory=list)  # paths whose label changed
    unchanged: list[str] = field(default_factory=list)  # their label is no longer the given one (already changed)
    created: bool = False  # the table was made from the manifest, and ingest.labels set to it


def _from_manifest(manifest_path: Path) -> pd.DataFrame:
    """A label table of every image the manifest holds: path, label, split (where the source gave one), group."""
    if not manifest_path.is_file():
        raise ValueError(f"{manifest_path}: not found; run the pipeline (imgpipe run) before relabelling")
    table = manifest.read(manifest_path)
    made = pd.DataFrame({"path": table["path"].astype(str), "label": table["label"].astype(str)})
    for column, name in (("split", "split"), ("subject", "group")):
        if column in table.columns and (table[column].fillna("").astype(str) != "").any():
            made[name] = table[column].fillna("").astype(str)
    return made.sort_values("path", kind="stable").reset_index(drop=True)


def apply(table: pd.DataFrame, accepted: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
    """`table` with each accepted row's suggested label; (new table, changed paths, paths left as they were). A path
    the table lacks is a ValueError naming it."""
    table = table.copy()
    where = {label_table.normalised_path(path): index for index, path in zip(table.index, table["path"])}
    missing = [path for path in accepted["path"] if label_table.normalised_path(path) not in where]
    if missing:
        raise ValueError(f"the label table has no row for {missing[0]!r} (and {len(missing) - 1} more of the rows "
                         "accepted); relabel from a label issues table of this project")
    changed, unchanged = [], []
    for row in accepted.itertuples(index=False):
        index = where[label_table.normalised_path(row.path)]
        current = label_table.canonical_labels(table.at[index, "label"])
        if current != label_table.canonical_labels(row.given_label) or not str(row.suggested_label).strip():
            unchanged.append(row.path)  # relabelled since the report, or no suggestion
            continue
        table.at[index, "label"] = row.suggested_label
        changed.append(row.path)
    return table, changed, unchanged


def default_table(params_path: Path) -> Path:
    """The label issues table the health stage wrote for the project of `params_path`."""
    _, paths = load_config(params_path)
    return paths.data_health / data_health.LABEL_ISSUES


def relabel(issues_file: Path, params_path: Path, new_table: Path | None = None) -> Relabelled:
    """Give every image of `issues_file` its suggested label in the project's label table (made, and named in
    params.yaml's ingest.labels, when there is none: at `new_table`, default labels.csv beside params.yaml)."""
    config, paths = load_config(params_path)
    accepted = data_health.read_label_issues(issues_file)
    if config.ingest.labels:
        target = paths.resolve(label_table.parse(config.ingest.labels))
        table, created = label_table.read_raw(target), False
    else:
        target = paths.resolve(new_table or NEW_TABLE)
        if target.exists():
            raise ValueError(f"{target}: already exists, and ingest.labels does not name it; set ingest.labels to "
                             f"csv:{target} to relabel through it, or choose another file")
        table, created = _from_manifest(paths.manifest), True
    table, changed, unchanged = apply(table, accepted)
    label_table.write(target, table)
    if created:
        relative = target.relative_to(paths.root) if target.is_relative_to(paths.root) else target
        params_file.write(params_path, {"ingest.labels": f"csv:{relative}"})
    logger.info("relabel: %d image(s) relabelled in %s; %d left (their label changed since the report)",
                len(changed), target, len(unchanged))
    return Relabelled(target, changed, unchanged, created)
