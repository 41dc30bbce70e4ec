"""Makes table cells safe to open in a spreadsheet (CSV formula injection); pure computation, reads and writes nothing.

A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is taken for a formula by Excel, LibreOffice
and Google Sheets; as OWASP advises, such a text cell gets a leading `'`, which spreadsheets show as text. Only CSV
outputs are escaped: Parquet keeps every value exact.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """A text value that a spreadsheet would run as a formula, prefixed with `'`; anything else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_table(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of `table` for a CSV file: every text cell and column name made safe (numbers stay numbers)."""
    safe = table.rename(columns=safe_cell)
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column].dtype):
            safe[column] = safe[column].map(safe_cell)
    return safe
