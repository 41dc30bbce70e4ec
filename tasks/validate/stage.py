"""Validate stage: reads data/interim/ (manifest, ingest summary) and quarantine.csv, writes data/reports/validation/.

Great Expectations suites check the manifest; a failed blocking check raises ValidationFailed after the report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from tasks import manifest as manifest_file
from tasks import atomic
from tasks.config import load_config
from tasks.params import ValidateParams
from tasks.paths import Paths
from tasks.validate.expectations import NOT_NULL_COLUMNS, build_checks, judge, run_great_expectations
from tasks.validate.facts import compute_facts, labels_of
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


def run(params: ValidateParams, paths: Paths) -> ValidationOutcome:
    """Check the manifest against the suites built from params; write the report; raise ValidationFailed on a blocking failure."""
    started = time.perf_counter()
    paths.validation_verdict.unlink(missing_ok=True)
    manifest, quarantine, ingest_summary = read_inputs(paths)
    facts = compute_facts(manifest, quarantine, ingest_summary)
    imbalance = facts.class_imbalance if facts.class_imbalance is not None else float("nan")  # GX skips NaN
    tables = {
        "manifest": manifest,
        "labels": pd.DataFrame({"label": labels_of(manifest).reset_index(drop=True)}),  # an image per label it has
        "class_counts": pd.DataFrame({"label": list(facts.images_per_class),
                                      "images": pd.Series(list(facts.images_per_class.values()), dtype="int64")}),
        "dataset": pd.DataFrame({"images_used": [facts.images_used], "quarantined": [facts.quarantined],
                                 "leaks": [len(facts.leaks)],
                                 "bad_fraction": [facts.bad_fraction], "class_imbalance": [imbalance]}),
    }
    gx_logger = logging.getLogger("great_expectations")
    if gx_logger.level == logging.NOTSET:  # GX logs every store write at INFO; keep a caller's explicit choice
        gx_logger.setLevel(logging.WARNING)
    with atomic.atomic_directory(paths.validation) as staging:  # replaces the old report only once all is written
        checks = build_checks(params)
        results, docs_dir = run_great_expectations(tables, checks, staging / "gx_project")
        statuses = judge(checks, results, manifest, facts, params)
        failed = [detail for status, _, detail in statuses if status == "FAIL"]
        warned = [detail for status, _, detail in statuses if status == "WARN"]
        headline = (f"Data validation {'FAILED' if failed else 'PASSED'}: {len(failed)} blocking check(s) failed, "
                    f"{len(warned)} warning(s)")
        summary_text = render_summary(facts, statuses, headline)
        report = {
            "success": not failed, "failed": failed, "warnings": warned,
            "checks": [{"status": status, "check": title, "detail": detail} for status, title, detail in statuses],
            "params": params.model_dump(mode="json"), "facts": dataclasses.asdict(facts),
            "great_expectations": {name: suite_result.to_json_dict() for name, suite_result in results.items()},
        }
        (staging / "result.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
        (staging / "summary.txt").write_text(summary_text, encoding="utf-8")
        docs_dir.rename(staging / "data_docs")
        shutil.rmtree(staging / "gx_project")
    logger.info("validated %d images in %.1fs: %d blocking failure(s), %d warning(s); report in %s",
                facts.images_used, time.perf_counter() - started, len(failed), len(warned), paths.validation)
    for detail in warned:
        logger.warning("data validation warning: %s", detail)
    outcome = ValidationOutcome(not failed, failed, warned, summary_text, paths.validation)
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
