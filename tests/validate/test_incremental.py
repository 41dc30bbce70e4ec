"""The validate stage checks what changed: per-row checks over the rows not checked before, the rest over summaries,
Data Docs rewritten only when the result changed; and the verdict is always the one a full validation gives.
Real Great Expectations runs throughout; a spy on expectations.validate_tables only counts the rows it is given."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tasks.paths import Paths
from tasks.params import ValidateParams
from tasks.validate import checked_rows, expectations
from tasks.validate import stage as validate
from tests.conftest import PROJECT_ROOT
from tests.validate.test_stage import PARAMS, manifest_rows, write_inputs

EXPECTED = ValidateParams(**{**PARAMS.model_dump(), "expected_labels": ("bird", "cat", "dog")})
BASE = {"cat": 12, "dog": 12, "bird": 11}


@pytest.fixture
def rows_checked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of manifest rows each run gives Great Expectations' per-row suite (one entry per run of GX)."""
    seen: list[int] = []
    real = expectations.validate_tables

    def spy(tables: dict[str, pd.DataFrame], *args: Any) -> Any:
        seen.append(len(tables["manifest"]))
        return real(tables, *args)

    monkeypatch.setattr(expectations, "validate_tables", spy)
    return seen


def run(params: ValidateParams, paths: Paths) -> validate.ValidationOutcome:
    """The outcome, passed or failed."""
    try:
        return validate.run(params, paths)
    except validate.ValidationFailed as failure:
        assert failure.outcome is not None
        return failure.outcome


def report(paths: Paths) -> dict[str, Any]:
    """result.json without what only says how this run got there (GX's own results, the rows it checked)."""
    result = json.loads((paths.validation / "result.json").read_text(encoding="utf-8"))
    return {key: value for key, value in result.items() if key not in ("great_expectations", "per_row_checks")}


def state(paths: Paths) -> checked_rows.State:
    found = checked_rows.read(paths.validation / checked_rows.STATE_FILE, validate.fingerprint(EXPECTED))
    assert found is not None
    return found


def new_rows(count: int, label: str = "cat", start: int = 100) -> list[dict[str, Any]]:
    return manifest_rows({label: start + count})[start:]


def more_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return rows + new_rows(3, "cat") + new_rows(2, "dog")


def bad_new_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    added = new_rows(6, "dog")
    added[0]["width"] = 4  # too small
    added[1]["format"] = None  # missing
    added[2]["label"] = "cow"  # not an expected label
    added[3]["sha256"] = rows[0]["sha256"]  # the same content as an old row
    added[4]["label"] = "dog;cow"  # a multi-label image with an unexpected label
    return rows + added


def removed_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if not (row["label"] == "bird" and row["path"] < "bird/0005.png")]  # bird: 6 left


def changed_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = copy.deepcopy(rows)
    rows[0]["label"] = "dog"  # relabelled in the source
    rows[13]["height"] = 5000  # over validate.max_side
    return rows


@pytest.mark.parametrize(("change", "checked"), [(more_rows, 5), (bad_new_rows, 6), (removed_rows, 0),
                                                 (changed_rows, 2)])
def test_a_run_after_a_change_gives_the_verdict_of_a_full_validation(tmp_path: Path, rows_checked: list[int],
                                                                     change: Any, checked: int) -> None:
    rows = manifest_rows(BASE)
    paths = write_inputs(tmp_path / "incremental", rows, ["corrupt"])
    assert run(EXPECTED, paths).success
    write_inputs(tmp_path / "incremental", change(rows), ["corrupt"])
    after_change = run(EXPECTED, paths)
    assert rows_checked == [len(rows), checked], "the per-row checks see only the new and changed rows"

    full_paths = write_inputs(tmp_path / "full", change(rows), ["corrupt"])
    full = run(EXPECTED, full_paths)
    assert rows_checked[-1] == len(change(rows))
    assert (after_change.success, after_change.failed, after_change.warnings) == (full.success, full.failed,
                                                                                 full.warnings)
    assert after_change.summary_text == full.summary_text
    assert report(paths) == report(full_paths)
    assert json.loads((paths.validation / "result.json").read_text())["per_row_checks"] == {
        "rows_checked": checked, "rows_passed_before": len(change(rows)) - checked}


def test_a_bad_new_row_fails_until_it_is_fixed_and_only_the_fix_is_checked_again(tmp_path: Path,
                                                                                   rows_checked: list[int]) -> None:
    rows = manifest_rows(BASE)
    paths = write_inputs(tmp_path, rows)
    run(EXPECTED, paths)
    bad = bad_new_rows(rows)
    write_inputs(tmp_path, bad)
    with pytest.raises(validate.ValidationFailed) as caught:
        validate.run(EXPECTED, paths)
    message = str(caught.value)
    for text in ("1 images have a width outside validate.min_side=8", "1 manifest rows have no format",
                 "labels not in validate.expected_labels: 'cow' (2 images)", "share their content (sha256)"):
        assert text in message
    assert state(paths).unpassed == 4, "the rows that failed a per-row check are not remembered as passed"
    with pytest.raises(validate.ValidationFailed) as again:  # nothing changed: the same rows fail again
        validate.run(EXPECTED, paths)
    assert str(again.value) == message
    assert rows_checked == [len(rows), 6, 4]

    fixed = copy.deepcopy(bad)
    fixed[-6]["width"], fixed[-5]["format"], fixed[-4]["label"], fixed[-2]["label"] = 32, "PNG", "dog", "dog"
    fixed[-3]["sha256"] = "dog-new-content"
    write_inputs(tmp_path, fixed)
    outcome = validate.run(EXPECTED, paths)
    assert outcome.success and outcome.failed == []
    assert rows_checked[-1] == 5, "the four rows that failed, and the one whose content changed"
    full = run(EXPECTED, write_inputs(tmp_path / "full", fixed))
    assert outcome.summary_text == full.summary_text


def test_nothing_new_keeps_the_report_as_it_is_and_does_not_run_great_expectations(
        tmp_path: Path, rows_checked: list[int]) -> None:
    paths = write_inputs(tmp_path, manifest_rows(BASE), ["corrupt"])
    first = validate.run(EXPECTED, paths)
    files = [paths.validation / name for name in ("result.json", "summary.txt", "data_docs/index.html",
                                                   checked_rows.STATE_FILE)]
    written = {file: file.stat().st_mtime_ns for file in files}
    again = validate.run(EXPECTED, paths)
    assert again == first
    assert {file: file.stat().st_mtime_ns for file in files} == written
    assert rows_checked == [len(manifest_rows(BASE))]
    assert json.loads(paths.validation_verdict.read_text())["success"] is True


def test_a_run_with_nothing_new_does_not_import_great_expectations(tmp_path: Path) -> None:
    paths = write_inputs(tmp_path, manifest_rows(BASE))
    validate.run(EXPECTED, paths)
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tasks.params import PathsParams, ValidateParams\n"
        "from tasks.paths import Paths\n"
        "from tasks.validate import stage\n"
        f"params = ValidateParams.model_validate_json({EXPECTED.model_dump_json()!r})\n"
        f"outcome = stage.run(params, Paths(PathsParams(), Path({str(tmp_path)!r})))\n"
        "print(outcome.success, 'great_expectations' in sys.modules)\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=environment, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"]


def test_an_unchanged_result_keeps_the_data_docs_while_the_changed_rows_are_checked(
        tmp_path: Path, rows_checked: list[int]) -> None:
    rows = manifest_rows(BASE)
    paths = write_inputs(tmp_path, rows)
    validate.run(EXPECTED, paths)
    docs = paths.validation / "data_docs" / "index.html"
    written = (docs.stat().st_mtime_ns, (paths.validation / "result.json").stat().st_mtime_ns)
    before = state(paths)
    swapped = copy.deepcopy(rows)  # two images trade labels: every figure of the data set stays the same
    swapped[1]["label"], swapped[13]["label"] = "dog", "cat"
    write_inputs(tmp_path, swapped)
    validate.run(EXPECTED, paths)
    assert rows_checked == [len(rows), 2]
    assert (docs.stat().st_mtime_ns, (paths.validation / "result.json").stat().st_mtime_ns) == written
    assert len(state(paths).keys) == len(before.keys) and set(state(paths).keys) != set(before.keys)
    validate.run(EXPECTED, paths)
    assert rows_checked == [len(rows), 2], "the swapped rows were remembered: the next run has nothing to check"


def test_a_change_of_params_checks_every_row_again(tmp_path: Path, rows_checked: list[int]) -> None:
    rows = manifest_rows(BASE)
    paths = write_inputs(tmp_path, rows)
    validate.run(EXPECTED, paths)
    validate.run(EXPECTED.model_copy(update={"max_side": 2048}), paths)
    validate.run(EXPECTED.model_copy(update={"max_side": 2048}), paths)
    assert rows_checked == [len(rows), len(rows)]


def test_a_run_killed_before_its_report_leaves_the_state_that_checks_the_new_rows_again(
        tmp_path: Path, rows_checked: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    rows = manifest_rows(BASE)
    paths = write_inputs(tmp_path, rows)
    validate.run(EXPECTED, paths)
    write_inputs(tmp_path, more_rows(rows))
    with monkeypatch.context() as patch:
        def killed(context: Any) -> Path:
            raise KeyboardInterrupt

        patch.setattr(validate, "build_data_docs", killed)
        with pytest.raises(KeyboardInterrupt):
            validate.run(EXPECTED, paths)
    assert len(state(paths).keys) == len(rows), "the state still names only the rows checked before"
    assert not [path for path in paths.reports.iterdir() if path.name.startswith(".")], "nothing half-built is left"
    outcome = validate.run(EXPECTED, paths)
    assert outcome.success and rows_checked == [len(rows), 5, 5]
    assert len(state(paths).keys) == len(more_rows(rows))


def test_an_unreadable_state_checks_every_row_again(tmp_path: Path, rows_checked: list[int]) -> None:
    rows = manifest_rows(BASE)
    paths = write_inputs(tmp_path, rows)
    validate.run(EXPECTED, paths)
    (paths.validation / checked_rows.STATE_FILE).write_bytes(b"not parquet")
    assert validate.run(EXPECTED, paths).success
    assert rows_checked == [len(rows), len(rows)]


def test_the_row_keys_cover_every_column_a_per_row_check_reads() -> None:
    """A per-row check reading a column the key leaves out would let a changed row pass unchecked."""
    for check in expectations.build_checks(EXPECTED):
        if not check.per_row:
            continue
        column = check.expectation.column
        if column in expectations.ROW_PRESENCE_COLUMNS:
            assert check.name == f"not_null_{column}", f"{check.name} reads more of {column} than whether it is there"
        else:
            assert column in (expectations.ROW_IDENTITY_COLUMN, *expectations.ROW_VALUE_COLUMNS), check.name
