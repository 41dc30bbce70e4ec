"""Validate stage: reads data/interim/ (manifest, ingest summary) and quarantine.csv, writes data/reports/validation/.

Great Expectations suites check the manifest; a failed blocking check raises ValidationFailed after the report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from tasks import atomic
from tasks.config import Paths, ValidateParams, load_config

logger = logging.getLogger(__name__)

NOT_NULL_COLUMNS = ("path", "label", "sha256", "width", "height", "format")
INGEST_KEYS = ("files_seen", "images_used", "quarantined", "duplicates_dropped", "near_duplicate_groups",
               "non_image_files", "hidden_entries", "empty_class_folders", "root_files", "skipped_links",
               "unreadable_folders")  # what the report uses of ingest_summary.json
BLOCKING, WARNING = "critical", "warning"  # values of the GX 1.x expectation field `severity`
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


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the inputs say about the data set, computed once with pandas."""

    images_per_class: dict[str, int]  # largest class first
    images_per_format: dict[str, int]
    quarantined_by_reason: dict[str, int]
    images_used: int
    quarantined: int
    bad_fraction: float
    class_imbalance: float | None  # largest class / smallest class
    side_ranges: dict[str, tuple[int, int]]  # width and height: smallest, largest
    ingest_summary: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Check:
    name: str  # stable id, stored in the expectation's meta to find its result again
    table: str
    title: str
    expectation: Any  # a great_expectations Expectation


def read_inputs(paths: Paths) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The manifest, the quarantine table and the ingest summary (the last two are empty when absent)."""
    if not paths.manifest.is_file():
        raise ValidationInputError(f"{paths.manifest}: manifest not found; run the ingest stage first")
    manifest = pd.read_parquet(paths.manifest)
    missing = [column for column in NOT_NULL_COLUMNS if column not in manifest.columns]
    if missing:
        raise ValidationInputError(f"{paths.manifest}: missing columns {missing}; re-run the ingest stage")
    quarantine = pd.DataFrame({"reason": pd.Series(dtype=str)})
    if paths.quarantine.is_file():
        quarantine = pd.read_csv(paths.quarantine, dtype=str, keep_default_na=False)
        if "reason" not in quarantine.columns:
            raise ValidationInputError(f"{paths.quarantine}: no 'reason' column; re-run the ingest stage")
    summary_file = paths.interim / "ingest_summary.json"
    if not summary_file.is_file():
        return manifest, quarantine, {}
    try:
        return manifest, quarantine, json.loads(summary_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValidationInputError(f"{summary_file}: not valid JSON ({error}); re-run the ingest stage") from None


def _value_counts(column: pd.Series) -> dict[str, int]:
    return {str(key): int(count) for key, count in column.value_counts().items()}


def compute_facts(manifest: pd.DataFrame, quarantine: pd.DataFrame, ingest_summary: dict[str, Any]) -> Facts:
    per_class = _value_counts(manifest["label"])
    images_used, quarantined = len(manifest), len(quarantine)
    for key, counted in (("images_used", images_used), ("quarantined", quarantined)):
        if ingest_summary.get(key, counted) != counted:
            logger.warning("ingest_summary.json says %s=%s, the files hold %d", key, ingest_summary[key], counted)
    return Facts(
        images_per_class=per_class,
        images_per_format=_value_counts(manifest["format"]),
        quarantined_by_reason=_value_counts(quarantine["reason"].replace("", "unknown")),
        images_used=images_used,
        quarantined=quarantined,
        bad_fraction=quarantined / (images_used + quarantined) if images_used + quarantined else 0.0,
        class_imbalance=max(per_class.values()) / min(per_class.values()) if per_class else None,
        side_ranges={side: (int(manifest[side].min()), int(manifest[side].max()))
                     for side in ("width", "height") if manifest[side].notna().any()},
        ingest_summary={key: ingest_summary[key] for key in INGEST_KEYS if key in ingest_summary},
    )


def build_checks(params: ValidateParams) -> list[Check]:
    """Every check as a GX expectation, in report order; `severity` says whether a failure stops the run."""
    import great_expectations.expectations as gxe

    def check(name: str, table: str, title: str, kind: type, severity: str = BLOCKING, **kwargs: Any) -> Check:
        notes = "Blocking: a failure stops the pipeline." if severity == BLOCKING else "Warning: reported only."
        return Check(name, table, title, kind(**kwargs, severity=severity, meta={"check": name}, notes=notes))

    checks = [check(f"not_null_{column}", "manifest", f"every image has a {column}",
                    gxe.ExpectColumnValuesToNotBeNull, column=column) for column in NOT_NULL_COLUMNS]
    if params.expected_labels is not None:
        labels = sorted(params.expected_labels)
        checks.append(check("labels_expected", "manifest", "every label is in validate.expected_labels",
                            gxe.ExpectColumnValuesToBeInSet, column="label", value_set=labels))
        checks.append(check("labels_present", "manifest", "every expected label has images",
                            gxe.ExpectColumnDistinctValuesToContainSet, column="label", value_set=labels))
    checks += [check(f"{side}_range", "manifest", f"{side} within {params.min_side}..{params.max_side} px",
                     gxe.ExpectColumnValuesToBeBetween, column=side, min_value=params.min_side,
                     max_value=params.max_side) for side in ("width", "height")]
    return checks + [
        check("sha256_unique", "manifest", "no content (sha256) appears twice",
              gxe.ExpectColumnValuesToBeUnique, column="sha256"),
        check("min_classes", "manifest", f"at least {params.min_classes} classes",
              gxe.ExpectColumnUniqueValueCountToBeBetween, column="label", min_value=params.min_classes),
        check("min_images_per_class", "class_counts", f"every class has >= {params.min_images_per_class} images",
              gxe.ExpectColumnValuesToBeBetween, column="images", min_value=params.min_images_per_class),
        check("max_bad_fraction", "dataset", f"at most {params.max_bad_fraction:.0%} of files quarantined",
              gxe.ExpectColumnValuesToBeBetween, column="bad_fraction", min_value=0,
              max_value=params.max_bad_fraction),
        check("class_imbalance", "dataset", f"largest / smallest class <= {params.warn_max_class_imbalance:g}",
              gxe.ExpectColumnValuesToBeBetween, severity=WARNING, column="class_imbalance",
              max_value=params.warn_max_class_imbalance),
    ]


def run_great_expectations(
    tables: dict[str, pd.DataFrame], checks: list[Check], project_dir: Path
) -> tuple[dict[str, Any], Path]:
    """Validate each table with its own checkpoint (a dataframe batch is per run); returns results and Data Docs."""
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
            name=f"validate_{table_name}", validation_definitions=[definition], result_format="SUMMARY",
            actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
        ))
        checkpoint_result = checkpoint.run(batch_parameters={"dataframe": frame})
        results[table_name] = next(iter(checkpoint_result.run_results.values()))
    return results, Path(context.root_directory) / "uncommitted" / "data_docs" / "local_site"


def _quoted(values: Any, limit: int = 8) -> str:
    values = [str(value) for value in values]
    text = ", ".join(repr(value) for value in values[:limit])
    return text + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _span(low: Any, high: Any) -> str:
    return f"{low}" if low == high else f"{low}..{high}"


def describe_failure(name: str, result: dict[str, Any], manifest: pd.DataFrame, facts: Facts,
                     params: ValidateParams) -> str:
    """One failed check in plain words, with the observed values and the param that sets the limit."""
    if name.startswith("not_null_"):
        return f"{result.get('unexpected_count')} manifest rows have no {name.removeprefix('not_null_')}"
    if name == "labels_expected":
        labels = manifest["label"].dropna()
        unknown = labels[~labels.isin(params.expected_labels or ())].value_counts()
        listed = ", ".join(f"{label!r} ({count} images)" for label, count in unknown.items())
        return f"labels not in validate.expected_labels: {listed}"
    if name == "labels_present":
        missing = sorted(set(params.expected_labels or ()) - set(facts.images_per_class))
        return f"expected labels with no images: {_quoted(missing)}"
    if name in ("width_range", "height_range"):
        side = name.removesuffix("_range")
        bad = manifest[(manifest[side] < params.min_side) | (manifest[side] > params.max_side)]
        examples = ", ".join(f"{row.path} ({row.width}x{row.height})" for row in bad.head(3).itertuples())
        return (f"{len(bad)} images have a {side} outside validate.min_side={params.min_side}..validate.max_side="
                f"{params.max_side} (observed {_span(bad[side].min(), bad[side].max())}), e.g. {examples}")
    if name == "sha256_unique":
        repeated = manifest[manifest["sha256"].duplicated(keep=False) & manifest["sha256"].notna()]
        groups = [" = ".join(f"{row.path} [{row.label}]" for row in group.itertuples())
                  for _, group in repeated.groupby("sha256")]
        return f"{len(repeated)} images share their content (sha256) with another image: " + "; ".join(groups[:3])
    if name == "min_classes":
        labels = f" ({_quoted(facts.images_per_class)})" if facts.images_per_class else ""
        return f"only {len(facts.images_per_class)} classes{labels}, under validate.min_classes={params.min_classes}"
    if name == "min_images_per_class":
        limit = params.min_images_per_class
        small = sorted((count, label) for label, count in facts.images_per_class.items() if count < limit)
        if len(small) == 1:
            return f"class {small[0][1]!r} has {small[0][0]} images, under validate.min_images_per_class={limit}"
        listed = ", ".join(f"{label!r} ({count})" for count, label in small[:8])
        return f"{len(small)} classes have fewer than validate.min_images_per_class={limit} images: {listed}"
    if name == "max_bad_fraction":
        reasons = ", ".join(f"{reason}: {count}" for reason, count in facts.quarantined_by_reason.items())
        files = facts.images_used + facts.quarantined
        return (f"{facts.bad_fraction:.0%} of files were quarantined ({facts.quarantined} of {files}; {reasons}), "
                f"over validate.max_bad_fraction={params.max_bad_fraction:g}")
    if name == "class_imbalance":
        classes = list(facts.images_per_class.items())
        (largest, most), (smallest, fewest) = classes[0], classes[-1]
        return (f"classes are imbalanced: {largest!r} has {most} images, {smallest!r} {fewest} ({most / fewest:.1f}x), "
                f"over validate.warn_max_class_imbalance={params.warn_max_class_imbalance:g}")
    return f"check {name} failed: {result}"


def render_summary(facts: Facts, statuses: list[tuple[str, str, str]], headline: str) -> str:
    """The one-screen text report: the data set in figures, then each check as PASS, FAIL or WARN."""
    def listing(mapping: dict[str, int]) -> str:
        return ", ".join(f"{key}: {value}" for key, value in mapping.items()) or "none"

    classes = list(facts.images_per_class.items())
    if len(classes) > 24:  # keep one screen: the largest and the smallest classes
        classes = classes[:12] + [(f"... {len(classes) - 24} more classes", "")] + classes[-12:]
    width = max((len(label) for label, _ in classes), default=0)
    ingest = facts.ingest_summary
    lines = [headline, "", f"Images per class ({len(facts.images_per_class)} classes, {facts.images_used} images):"]
    lines += [f"  {label:<{width}}  {count}".rstrip() for label, count in classes]
    lines += [
        f"Images per format: {listing(facts.images_per_format)}",
        "Image size: " + (", ".join(f"{side} {_span(*span)} px" for side, span in facts.side_ranges.items()) or "n/a"),
        f"Quarantined: {facts.quarantined} ({facts.bad_fraction:.1%} of files); by reason: "
        f"{listing(facts.quarantined_by_reason)}",
        "; ".join(f"{title}: {ingest.get(key, 'n/a')}" for key, title in (
            ("files_seen", "Files seen"), ("duplicates_dropped", "duplicates dropped"),
            ("near_duplicate_groups", "near-duplicate groups"), ("non_image_files", "non-image files"),
            ("hidden_entries", "hidden entries"))),
    ]
    for key, title in (("empty_class_folders", "Empty class folders"), ("root_files", "Files at the source root"),
                       ("skipped_links", "Links not followed"), ("unreadable_folders", "Folders that could not be read")):
        if ingest.get(key):
            lines.append(f"{title} (ignored): {_quoted(ingest[key])}")
    lines += ["", "Checks:"]
    lines += [f"  {status:<4}  {title}" + (detail and f"\n        {detail}") for status, title, detail in statuses]
    lines += ["", "Details: result.json, data_docs/index.html (Great Expectations Data Docs)"]
    return "\n".join(lines) + "\n"


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


def run(params: ValidateParams, paths: Paths) -> ValidationOutcome:
    """Check the manifest against the suites built from params; write the report; raise ValidationFailed on a blocking failure."""
    started = time.perf_counter()
    paths.validation_verdict.unlink(missing_ok=True)
    manifest, quarantine, ingest_summary = read_inputs(paths)
    facts = compute_facts(manifest, quarantine, ingest_summary)
    imbalance = facts.class_imbalance if facts.class_imbalance is not None else float("nan")  # GX skips NaN
    tables = {
        "manifest": manifest,
        "class_counts": pd.DataFrame({"label": list(facts.images_per_class),
                                      "images": pd.Series(list(facts.images_per_class.values()), dtype="int64")}),
        "dataset": pd.DataFrame({"images_used": [facts.images_used], "quarantined": [facts.quarantined],
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


if __name__ == "__main__":
    main()
