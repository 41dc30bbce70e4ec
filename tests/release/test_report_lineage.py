"""The run report shows the gate's record of both models' data: other data under the same labels is said plainly."""

from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path

from tasks.params import PathsParams
from tasks.paths import Paths
from tasks.release import lineage, report
from tasks.train import lineage as train_lineage
from tests.release.test_report import fake_gate


def _card(name: str, count: int, source: str) -> dict:
    digests = [hashlib.sha256(f"{name}-{number}".encode()).hexdigest() for number in range(count)]
    return {"version": name, "data_sha256": hashlib.sha256(name.encode()).hexdigest(),
            "labels": [str(digit) for digit in range(10)],
            "data_lineage": {"source": source, "manifest_sha256": "f" * 64, "images": count,
                             "image_sample": train_lineage.image_sample(digests)}}


def _write_gate(paths: Paths, record: dict | None) -> None:
    paths.evaluation.mkdir(parents=True, exist_ok=True)
    (paths.evaluation / "gate.json").write_text(json.dumps(fake_gate() | {"lineage": record}), encoding="utf-8")


def test_the_report_says_when_production_learnt_from_other_data(tmp_path: Path) -> None:
    paths = Paths(PathsParams(), tmp_path)
    record = lineage.compare(_card("photos", 2062, "/home/me/<hand> & signs"), _card("digits", 1797, "data/demo/digits"))
    _write_gate(paths, record)
    page = report.run(paths).read_text(encoding="utf-8")
    assert "<h3>The data differ</h3><p class=\"note\">" + html.escape("The candidate's data is not the production "
                                                                     "model's data grown") in page
    assert "data/demo/digits" in page and "/home/me/&lt;hand&gt; &amp; signs" in page and "<hand>" not in page
    assert "<td>2,062</td>" in page and "<td>1,797</td>" in page and "<td>ffffffffffff</td>" in page
    summary = report.markdown_summary(paths)
    assert "Data: The candidate's data is not the production model's data grown: only 0% of production's images" \
        in summary


def test_the_report_names_grown_data_quietly_and_skips_a_gate_without_a_record(tmp_path: Path) -> None:
    paths = Paths(PathsParams(), tmp_path)
    production = _card("images", 800, "src")
    grown = _card("images", 900, "src") | {"data_sha256": "other"}  # the same 800 images and 100 more
    _write_gate(paths, lineage.compare(grown, production))
    page = report.run(paths).read_text(encoding="utf-8")
    assert "<h3>The data behind each model</h3><p>" + html.escape("The candidate's data is the production model's "
                                                                  "data grown: 100%") in page
    assert "Data:" not in report.markdown_summary(paths)
    _write_gate(paths, None)  # a gate.json written before the gate kept a lineage record
    page = report.run(paths).read_text(encoding="utf-8")
    assert "The data behind each model" not in page and "The data differ" not in page
