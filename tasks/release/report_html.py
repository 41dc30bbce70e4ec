"""Small HTML pieces of the run report (numbers, tables, notes), shared by report.py and report_sections.py; reads and
writes nothing."""

from __future__ import annotations

import html
from typing import Any


def number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    """An HTML table; cells are escaped here, columns from `numeric_from` on are right-aligned."""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)

    def cell(index: int, text: str) -> str:
        alignment = " class=\"number\"" if index >= numeric_from else ""
        return f"<td{alignment}>{html.escape(text)}</td>"

    body = "".join("<tr>" + "".join(cell(index, text) for index, text in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def pairs(rows: list[tuple[str, str]], code: bool = False) -> str:
    """A two-column table of names and values, the name as a row header."""
    wrap = ("<code>", "</code>") if code else ("", "")
    return "<table>" + "".join(f"<tr><th>{html.escape(name)}</th><td>{wrap[0]}{html.escape(value)}{wrap[1]}</td></tr>"
                               for name, value in rows) + "</table>"


def missing(what: str) -> str:
    return f"<p class=\"note\">{html.escape(what)}</p>"
