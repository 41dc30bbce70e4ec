"""The validation checks as Great Expectations suites: builds them from params, runs them on tables, and reads back
each check's verdict; writes the GX project (and, when asked, its Data Docs) into the folder it is given.

Two kinds of check: per-row checks (tables "manifest" and "labels") judge each row on its own, so they run over the
rows no earlier run checked; every other check runs over a summary table of O(classes) rows built from the whole
manifest (class counts, the rows whose content repeats, the data set's figures).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.params import ValidateParams
from tasks.validate.facts import Facts
from tasks.validate.wording import describe_failure

NOT_NULL_COLUMNS = ("path", "label", "sha256", "width", "height", "format")
BLOCKING, WARNING = "critical", "warning"  # values of the GX 1.x expectation field `severity`
PER_ROW_TABLES = ("manifest", "labels")  # their checks judge each row alone; "labels" has a row per (image, label)
# What the per-row checks read of a row: its content's sha256 and these columns' values, and whether the presence
# columns hold a value (any value passes). A row whose key (checked_rows.row_keys) passed them before passes again;
# a test holds these lists to the checks.
ROW_IDENTITY_COLUMN = "sha256"
ROW_VALUE_COLUMNS = ("label", "width", "height", "format")
ROW_PRESENCE_COLUMNS = ("path",)
# Bump when a check changes what it accepts: rows checked by an older version are then checked again.
CHECKS_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Check:
    name: str  # stable id, stored in the expectation's meta to find its result again
    table: str
    title: str
    expectation: Any  # a great_expectations Expectation

    @property
    def per_row(self) -> bool:
        return self.table in PER_ROW_TABLES


def build_checks(params: ValidateParams) -> list[Check]:
    """Every check as a GX expectation, in report order; `severity` says whether a failure stops the run."""
    import great_expectations.expectations as gxe

    def check(name: str, table: str, title: str, kind: type, severity: str = BLOCKING, **kwargs: Any) -> Check:
        notes = "Blocking: a failure stops the pipeline." if severity == BLOCKING else "Warning: reported only."
        if table in PER_ROW_TABLES:
            notes += (" Run over the rows that no earlier run saw pass these checks; the others passed them before "
                      "(result.json: per_row_checks).")
        return Check(name, table, title, kind(**kwargs, severity=severity, meta={"check": name}, notes=notes))

    checks = [check(f"not_null_{column}", "manifest", f"every image has a {column}",
                    gxe.ExpectColumnValuesToNotBeNull, column=column) for column in NOT_NULL_COLUMNS]
    if params.expected_labels is not None:
        labels = sorted(params.expected_labels)
        checks.append(check("labels_expected", "labels", "every label is in validate.expected_labels",
                            gxe.ExpectColumnValuesToBeInSet, column="label", value_set=labels))
        checks.append(check("labels_present", "class_counts", "every expected label has images",
                            gxe.ExpectColumnDistinctValuesToContainSet, column="label", value_set=labels))
    checks += [check(f"{side}_range", "manifest", f"{side} within {params.min_side}..{params.max_side} px",
                     gxe.ExpectColumnValuesToBeBetween, column=side, min_value=params.min_side,
                     max_value=params.max_side) for side in ("width", "height")]
    return checks + [
        check("sha256_unique", "repeated_sha256", "no content (sha256) appears twice",
              gxe.ExpectColumnValuesToBeUnique, column="sha256"),
        check("min_classes", "class_counts", f"at least {params.min_classes} classes",
              gxe.ExpectColumnUniqueValueCountToBeBetween, column="label", min_value=params.min_classes),
        check("max_classes", "class_counts", f"at most {params.max_classes} classes",
              gxe.ExpectColumnUniqueValueCountToBeBetween, column="label", max_value=params.max_classes),
        check("min_images_per_class", "class_counts", f"every class has >= {params.min_images_per_class} images",
              gxe.ExpectColumnValuesToBeBetween, column="images", min_value=params.min_images_per_class),
        check("max_bad_fraction", "dataset", f"at most {params.max_bad_fraction:.0%} of files quarantined",
              gxe.ExpectColumnValuesToBeBetween, column="bad_fraction", min_value=0,
              max_value=params.max_bad_fraction),
        check("split_leakage", "dataset", "no near-duplicates across the splits the source gives",
              gxe.ExpectColumnValuesToBeBetween, severity=WARNING, column="leaks", max_value=0),
        check("class_imbalance", "dataset", f"largest / smallest class <= {params.warn_max_class_imbalance:g}",
              gxe.ExpectColumnValuesToBeBetween, severity=WARNING, column="class_imbalance",
              max_value=params.warn_max_class_imbalance),
    ]


def validate_tables(
    tables: dict[str, pd.DataFrame], checks: list[Check], project_dir: Path
) -> tuple[dict[str, Any], Any]:
    """Validate each table with its own checkpoint (a dataframe batch is per run); returns the results by table and
    the GX context, for build_data_docs. Nothing is rendered here: Data Docs cost more than the checks."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with warnings.catch_warnings():  # GX 1.24 imports the deprecated sre_parse; nothing for us to act on
        warnings.simplefilter("ignore", DeprecationWarning)
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=project_dir)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # tqdm bars on stderr otherwise
    context.variables.analytics_enabled = False
    context.variables.save()
    data_source = context.data_sources.add_pandas("imgpipe")
    results: dict[str, Any] = {}
    for table_name, frame in tables.items():
        expectations = [check.expectation for check in checks if check.table == table_name]
        suite = context.suites.add(gx.ExpectationSuite(name=f"imgpipe_{table_name}", expectations=expectations))
        batch = data_source.add_dataframe_asset(table_name).add_batch_definition_whole_dataframe(table_name)
        definition = gx.ValidationDefinition(name=table_name, data=batch, suite=suite)
        definition = context.validation_definitions.add(definition)
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=f"validate_{table_name}", validation_definitions=[definition], result_format="SUMMARY", actions=[],
        ))
        checkpoint_result = checkpoint.run(batch_parameters={"dataframe": frame})
        results[table_name] = next(iter(checkpoint_result.run_results.values()))
    return results, context


def build_data_docs(context: Any) -> Path:
    """Render the Data Docs of every validation the context ran, once; returns their folder (index.html inside)."""
    context.build_data_docs()
    return Path(context.root_directory) / "uncommitted" / "data_docs" / "local_site"


def failed_rows(checks: list[Check], results: dict[str, Any]) -> set[Any] | None:
    """The index labels of the rows that failed a per-row check; None when GX did not name them all (more than its
    partial list holds, or a check raised), so that no row of this batch can be taken as passed."""
    by_check = {item.expectation_config.meta["check"]: item for table in results.values() for item in table.results}
    failed: set[Any] = set()
    for check in checks:
        result = by_check[check.name]
        if not check.per_row or result.success:
            continue
        named = result.result.get("partial_unexpected_index_list") or []
        if result.exception_info.get("raised_exception") or result.result.get("unexpected_count") != len(named):
            return None
        failed.update(named)
    return failed


def judge(checks: list[Check], results: dict[str, Any], manifest: pd.DataFrame, facts: Facts,
          params: ValidateParams) -> list[tuple[str, str, str]]:
    """(PASS, FAIL or WARN; check title; what failed, in plain words) for each check, in the order of `checks`."""
    by_check = {item.expectation_config.meta["check"]: item for table in results.values() for item in table.results}
    statuses = []
    for check in checks:
        result = by_check[check.name]
        if result.success:
            statuses.append(("PASS", check.title, ""))
            continue
        if result.exception_info.get("raised_exception"):
            detail = f"{check.title} could not be evaluated: {result.exception_info.get('exception_message')}"
        else:
            detail = describe_failure(check.name, result.result, manifest, facts, params)
        statuses.append(("FAIL" if result.expectation_config.severity == BLOCKING else "WARN", check.title, detail))
    return statuses
