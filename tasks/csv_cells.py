"""Makes table cells safe to open in a spreadsheet (CSV formula injection); pure computation, reads and writes nothing.

A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is taken for a formula by Excel, LibreOffice
and Google Sheets; as OWASP advises, such a text cell gets a leading `'`, which spreadsheets show as text. Only CSV
outputs are escaped: Parquet keeps every value exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _escaped(value: Any) -> bool:
    """Whether `value` needs a `'` in a CSV: it starts like a formula, or is quotes before such a start (so that
    reading back removes exactly the one `'` that writing added)."""
    return isinstance(value, str) and value.lstrip("'").startswith(FORMULA_STARTS)


def safe_cell(value: Any) -> Any:
    """A text value that a spreadsheet would run as a formula, prefixed with `'`; anything else unchanged."""
    return "'" + value if _escaped(value) else value


def exact_cell(value: Any) -> Any:
    """The value `safe_cell` was given: what imgpipe reads back from its own CSV files."""
    return value[1:] if _escaped(value) and value.startswith("'") else value


def _map_text(table: pd.DataFrame, cell: Callable[[Any], Any]) -> pd.DataFrame:
    """A copy of `table` with `cell` applied to its column names and to every text cell (numbers stay numbers)."""
    mapped = table.rename(columns=cell)
    for column in mapped.columns:
        if mapped[column].dtype == object or pd.api.types.is_string_dtype(mapped[column].dtype):
            mapped[column] = mapped[column].map(cell)
    return mapped


def safe_table(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of `table` for a CSV file: every text cell and column name made safe (numbers stay numbers)."""
    return _map_text(table, safe_cell)


def exact_table(table: pd.DataFrame) -> pd.DataFrame:
    """A table read from a CSV file that `safe_table` wrote, with its text cells and column names as they were."""
    return _map_text(table, exact_cell)
