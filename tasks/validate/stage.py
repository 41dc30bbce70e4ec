"""Validate stage: reads data/interim/ (manifest, ingest summary) and quarantine.csv, writes data/reports/validation/.

Great Expectations suites check the manifest; a failed blocking check raises ValidationFailed after the report.
Cost follows what changed: the per-row checks run over the rows the last run did not see pass (checked_rows.py
remembers them), the table-level checks over summaries of O(classes) rows; the report and its Data Docs are
rewritten only when the result changed, and a run with nothing new does not import Great Expectations at all.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks import manifest as manifest_file
from tasks import atomic, dvc_outputs
from tasks.config import load_config
from tasks.params import ValidateParams
from tasks.paths import Paths
from tasks.validate import checked_rows
from tasks.validate import expectations
from tasks.validate.expectations import NOT_NULL_COLUMNS, build_checks, build_data_docs, failed_rows, judge
from tasks.validate.facts import Facts, compute_facts, labels_of, repeated_content
from tasks.validate.wording import render_summary

logger = logging.getLogger(__name__)

NEXT_STEP = "fix the source folder and re-run ingest, or adjust the validate.* params in params.yaml"


class ValidationInputError(ValueError):
    """An input of the validate stage is missing or unreadable."""


class ValidationFailed(ValueError):
    """At least one blocking check failed; the report was written all the same and is in `outcome`."""

    def __init__(self, message: str, outcome: ValidationOutcome | None = None) -> None:  # default: picklable
        super().__init__(message)
        self.outcome = outcome


@dataclasses.dataclass(frozen=True)
class ValidationOutcome:
    success: bool
    failed: list[str]
    warnings: list[str]
    summary_text: str
    report_dir: Path


def read_inputs(paths: Paths) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The manifest, the quarantine table and the ingest summary (the last two are empty when absent)."""
    if not paths.manifest.is_file():
        raise ValidationInputError(f"{paths.manifest}: manifest not found; run the ingest stage first")
    manifest = manifest_file.read(paths.manifest)
    missing = [column for column in NOT_NULL_COLUMNS if column not in manifest.columns]
    if missing:
        raise ValidationInputError(f"{paths.manifest}: missing columns {missing}; re-run the ingest stage")
    quarantine = pd.DataFrame({"reason": pd.Series(dtype=str)})
    if paths.quarantine.is_file():
        quarantine = pd.read_csv(paths.quarantine, dtype=str, keep_default_na=False)
        if "reason" not in quarantine.columns:
            raise ValidationInputError(f"{paths.quarantine}: no 'reason' column; re-run the ingest stage")
    summary_file = paths.ingest_summary
    if not summary_file.is_file():
        return manifest, quarantine, {}
    try:
        return manifest, quarantine, json.loads(summary_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValidationInputError(f"{summary_file}: not valid JSON ({error}); re-run the ingest stage") from None


def fingerprint(params: ValidateParams) -> dict[str, Any]:
    """What a row's per-row verdict depends on besides its values; another fingerprint checks every row again."""
    return {"checks_version": expectations.CHECKS_VERSION, "params": params.model_dump(mode="json"),
            "great_expectations": importlib.metadata.version("great_expectations"), "pandas": pd.__version__}


def summary_tables(facts: Facts, repeated: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The tables of the table-level checks, each of O(classes) rows, built from the figures of the whole manifest."""
    imbalance = facts.class_imbalance if facts.class_imbalance is not None else float("nan")  # GX skips NaN
    return {
        "class_counts": pd.DataFrame({"label": list(facts.images_per_class),
                                      "images": pd.Series(list(facts.images_per_class.values()), dtype="int64")}),
        "repeated_sha256": repeated,  # the rows whose content another row has too: empty in a good data set
        "dataset": pd.DataFrame({"images_used": [facts.images_used], "quarantined": [facts.quarantined],
                                 "leaks": [len(facts.leaks)],
                                 "bad_fraction": [facts.bad_fraction], "class_imbalance": [imbalance]}),
    }


def report_is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("result.json", "summary.txt", "data_docs/index.html"))


def last_outcome(folder: Path) -> ValidationOutcome:
    """The outcome the report in `folder` holds (a run with nothing new gives it again)."""
    result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    return ValidationOutcome(result["success"], result["failed"], result["warnings"],
                             (folder / "summary.txt").read_text(encoding="utf-8"), folder)


@dataclasses.dataclass(frozen=True)
class SuiteRun:
    """What one run of the suites gave."""

    report: dict[str, Any]  # result.json without the Great Expectations results: the result, as compared between runs
    summary_text: str
    passed: np.ndarray  # per manifest row: passed every per-row check, in this run or an earlier one
    rows_checked: int
    results: dict[str, Any]  # Great Expectations' results by table
    context: Any  # the GX context that ran them, for its Data Docs


def check(params: ValidateParams, manifest: pd.DataFrame, facts: Facts, repeated: pd.DataFrame,
          checked: np.ndarray, project: Path) -> SuiteRun:
    """Run the per-row suites over the rows not `checked` before and the other suites over summaries; the GX project
    goes into `project`."""
    rows = manifest[~checked]
    tables = {"manifest": rows, "labels": pd.DataFrame({"label": labels_of(rows)}),  # index: the manifest row
              **summary_tables(facts, repeated)}
    checks = build_checks(params)
    results, context = expectations.validate_tables(tables, checks, project)
    statuses = judge(checks, results, manifest, facts, params)
    failing = failed_rows(checks, results)
    # the rows checked before, and those of this run that Great Expectations did not name as failing
    passed = checked if failing is None else checked | ~manifest.index.isin(list(failing))
    failed = [detail for status, _, detail in statuses if status == "FAIL"]
    warned = [detail for status, _, detail in statuses if status == "WARN"]
    headline = (f"Data validation {'FAILED' if failed else 'PASSED'}: {len(failed)} blocking check(s) failed, "
                f"{len(warned)} warning(s)")
    report = {
        "success": not failed, "failed": failed, "warnings": warned,
        "checks": [{"status": status, "check": title, "detail": detail} for status, title, detail in statuses],
        "params": params.model_dump(mode="json"), "facts": dataclasses.asdict(facts),
    }
    return SuiteRun(report, render_summary(facts, statuses, headline), passed, len(rows), results, context)


def write_report(folder: Path, suite_run: SuiteRun, rows_passed_before: int, state: checked_rows.State) -> None:
    """Replace the whole report folder at once: result.json, summary.txt, data_docs/ and, inside it, the state."""
    report = {**suite_run.report,
              "per_row_checks": {"rows_checked": suite_run.rows_checked, "rows_passed_before": rows_passed_before},
              "great_expectations": {name: result.to_json_dict() for name, result in suite_run.results.items()}}
    docs = build_data_docs(suite_run.context)
    with atomic.atomic_directory(folder) as staging:
        (staging / "result.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
        (staging / "summary.txt").write_text(suite_run.summary_text, encoding="utf-8")
        docs.rename(staging / "data_docs")
        checked_rows.write(staging / checked_rows.STATE_FILE, state)


@dataclasses.dataclass(frozen=True)
class Remembered:
    """This manifest's rows against what the last run remembered (checked_rows.py)."""

    keys: np.ndarray  # per manifest row
    checked: np.ndarray  # per manifest row: passed every per-row check in an earlier run, under the same fingerprint
    earlier: checked_rows.State | None
    fingerprint: dict[str, Any]
    inputs: str  # digest of what the table-level checks and the summary read

    def nothing_changed(self, folder: Path) -> bool:
        """The rows all passed before, and the rest reads as before: the result is the one reported in `folder`."""
        earlier = self.earlier
        return (earlier is not None and bool(self.checked.all()) and earlier.unpassed == 0
                and earlier.inputs == self.inputs and report_is_complete(folder))

    def state(self, passed: np.ndarray, result: str) -> checked_rows.State:
        return checked_rows.State(keys=np.unique(self.keys[passed]), fingerprint=self.fingerprint, inputs=self.inputs,
                                  result=result, unpassed=int((~passed).sum()))


def remembered(params: ValidateParams, paths: Paths, manifest: pd.DataFrame, facts: Facts,
               repeated: pd.DataFrame) -> Remembered:
    keys = checked_rows.row_keys(manifest, expectations.ROW_IDENTITY_COLUMN, expectations.ROW_VALUE_COLUMNS,
                                 expectations.ROW_PRESENCE_COLUMNS)
    checked_under = fingerprint(params)
    earlier = checked_rows.read(paths.validation / checked_rows.STATE_FILE, checked_under)
    checked = np.zeros(len(manifest), dtype=bool) if earlier is None else pd.Series(keys).isin(earlier.keys).to_numpy()
    # all that the table-level checks and the summary read: when it and the rows are as before, so is the result
    inputs = checked_rows.digest([dataclasses.asdict(facts), repeated.to_dict("records")])
    return Remembered(keys, checked, earlier, checked_under, inputs)


def revalidate(params: ValidateParams, paths: Paths, manifest: pd.DataFrame, facts: Facts, repeated: pd.DataFrame,
               memory: Remembered) -> ValidationOutcome:
    """Run the suites over what changed; rewrite the report only if its result changed; write the state last."""
    gx_logger = logging.getLogger("great_expectations")
    if gx_logger.level == logging.NOTSET:  # GX logs every store write at INFO; keep a caller's explicit choice
        gx_logger.setLevel(logging.WARNING)
    # named as atomic_directory names its folders, so that tasks/leftovers.py clears it after a killed run
    project = Path(tempfile.mkdtemp(prefix=f".{paths.validation.name}.", suffix=".partial", dir=paths.reports))
    try:
        suite_run = check(params, manifest, facts, repeated, memory.checked, project / "gx_project")
        state = memory.state(suite_run.passed, checked_rows.digest([suite_run.report, suite_run.summary_text]))
        earlier = memory.earlier
        if earlier is not None and earlier.result == state.result and report_is_complete(paths.validation):
            logger.info("validate: the result is the one reported before; report and Data Docs kept")
            checked_rows.write(paths.validation / checked_rows.STATE_FILE, state)  # last: a killed run leaves the old
        else:
            write_report(paths.validation, suite_run, int(memory.checked.sum()), state)
    finally:
        shutil.rmtree(project, ignore_errors=True)
    logger.info("validate: the per-row checks ran over %d new or unpassed row(s) of %d", suite_run.rows_checked,
                len(manifest))
    report = suite_run.report
    return ValidationOutcome(report["success"], report["failed"], report["warnings"], suite_run.summary_text,
                             paths.validation)


def run(params: ValidateParams, paths: Paths) -> ValidationOutcome:
    """Check the manifest against the suites built from params; write the report; raise ValidationFailed on a blocking failure."""
    started = time.perf_counter()
    paths.validation_verdict.unlink(missing_ok=True)
    manifest, quarantine, ingest_summary = read_inputs(paths)
    facts = compute_facts(manifest, quarantine, ingest_summary)
    repeated = repeated_content(manifest)
    dvc_outputs.restore(paths.root, "validate", [paths.validation])  # under DVC: the last run's report and state
    memory = remembered(params, paths, manifest, facts, repeated)
    if memory.nothing_changed(paths.validation):
        logger.info("validate: nothing changed since the last run; report kept")
        outcome = last_outcome(paths.validation)
    else:
        outcome = revalidate(params, paths, manifest, facts, repeated, memory)
    failed, warned = outcome.failed, outcome.warnings
    logger.info("validated %d images in %.1fs: %d blocking failure(s), %d warning(s); report in %s",
                facts.images_used, time.perf_counter() - started, len(failed), len(warned), paths.validation)
    for detail in warned:
        logger.warning("data validation warning: %s", detail)
    if failed:
        summary_path = paths.validation / "summary.txt"
        shown = summary_path.relative_to(paths.root) if summary_path.is_relative_to(paths.root) else summary_path
        plural = "s" if len(failed) > 1 else ""
        message = f"data validation failed ({len(failed)} blocking check{plural}): " + "; ".join(failed)
        raise ValidationFailed(f"{message}. See {shown}; {NEXT_STEP}", outcome)
    atomic.write_json(paths.validation_verdict, {"success": True, "warnings": warned,
                                                 "images_used": facts.images_used, "quarantined": facts.quarantined})
    return outcome


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, paths = load_config()
    run(config.validation, paths)
