"""The data drift of the run report and of the training flow's Prefect artifact: how far the images new since the last
health run sit from that run's images, per class; reads data/reports/data_health/drift.json, writes nothing.

Built from tasks/release/report_html.py like the other sections; tasks/release/report_sections.py places it on the
page after the data health section.
"""

from __future__ import annotations

import html
from typing import Any

from tasks import data_health
from tasks.paths import Paths
from tasks.release import report_html

COLUMNS = ["class", "new images", "images at the last run", "shift (spreads)", "spread ratio", "note"]


def _shift(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def _largest(drift: dict[str, Any]) -> str:
    largest = drift.get("largest") or {}
    if not largest:
        return "—"
    new = report_html.number(largest.get("new_images"))
    return f"{largest.get('class')}: {_shift(largest.get('shift'))} ({new} new)"


def _rows(drift: dict[str, Any]) -> list[list[str]]:
    return [[str(row.get("class", "")), report_html.number(row.get("new_images")),
             report_html.number(row.get("reference_images")), _shift(row.get("shift")), _shift(row.get("spread_ratio")),
             str(row.get("note", ""))] for row in drift.get("classes") or []]


def _headline(drift: dict[str, Any]) -> list[tuple[str, str]]:
    return [("new images since the last run", report_html.number(drift.get("new_images"))),
            ("images at the last run", report_html.number(drift.get("reference_images"))),
            ("overall shift (spreads)", _shift(drift.get("overall"))),
            ("largest shift", _largest(drift)),
            ("warning above (health.drift_warning)", _shift(drift.get("threshold"))),
            ("compared by", str(drift.get("features", "—")))]


def section(paths: Paths) -> str:
    """The drift section: what was compared, the shift overall and per class, and the warning when there is one."""
    drift = data_health.read_drift(paths.data_health)
    if drift is None:
        return ("<section id=\"data-drift\"><h2>Data drift</h2>"
                f"{report_html.missing('No drift measured yet (the health stage writes data_health/drift.json).')}"
                "</section>")
    body = f"<p>{html.escape(str(drift.get('note', '')))}.</p>"
    if drift.get("warning"):
        body += f"<p class=\"note\">Warning: {html.escape(str(drift['warning']))}.</p>"
    if drift.get("status") == "measured":
        body += report_html.pairs(_headline(drift))
        if drift.get("classes"):
            body += "<h3>Per class, largest shift first</h3>" + report_html.table(COLUMNS, _rows(drift), numeric_from=1)
        body += (f"<p>Shift: {html.escape(str(drift.get('method', '')))}; a class warns from "
                 f"{report_html.number(drift.get('min_images'))} new images on. Spread ratio: how much the new images "
                 "vary against the class then (1: as much).</p>")
    return f"<section id=\"data-drift\"><h2>Data drift</h2>{body}</section>"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(paths: Paths) -> str | None:
    """The drift as markdown for a Prefect artifact, or None when the health stage wrote no drift.json."""
    drift = data_health.read_drift(paths.data_health)
    if drift is None:
        return None
    lines = ["## Data drift", "", _cell(str(drift.get("note", ""))) + ".", ""]
    if drift.get("warning"):
        lines += [f"**Warning:** {_cell(str(drift['warning']))}.", ""]
    if drift.get("status") == "measured":
        lines += ["| | |", "|---|---|"] + [f"| {_cell(name)} | {_cell(value)} |" for name, value in _headline(drift)]
        if drift.get("classes"):
            lines += ["", "| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * 4 + "---|"]
            lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in _rows(drift)]
    return "\n".join(lines) + "\n"
