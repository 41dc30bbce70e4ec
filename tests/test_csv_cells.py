"""Issue 27 item 14: a cell that a spreadsheet would run as a formula is written as text (OWASP's leading quote)."""

import pandas as pd

from tasks import csv_cells


def test_formula_cells_get_a_leading_quote_and_other_values_stay_as_they_are():
    for dangerous in ("=1+1", "+1", "-2+3", "@SUM(A1)", "\t=x", "\r=x"):
        assert csv_cells.safe_cell(dangerous) == "'" + dangerous
    for harmless in ("cat", "a=b", "", " =x", 3, -1.5, None):
        assert csv_cells.safe_cell(harmless) == harmless


def test_a_table_keeps_its_numbers_and_escapes_its_text_and_column_names():
    table = pd.DataFrame({"class": ["=cmd", "dog"], "f1": [-0.5, 1.0], "=head": ["+x", "y"]})
    safe = csv_cells.safe_table(table)
    assert list(safe.columns) == ["class", "f1", "'=head"]
    assert safe["class"].tolist() == ["'=cmd", "dog"] and safe["'=head"].tolist() == ["'+x", "y"]
    assert safe["f1"].tolist() == [-0.5, 1.0]
    assert table["class"].tolist() == ["=cmd", "dog"]  # the caller's table is untouched (Parquet stays exact)


def test_reading_back_gives_every_value_exactly_as_it_was():
    values = ["=1+1", "'=1+1", "''@x", "'plain", "plain", "", "-", "'", "+", 3, None]
    for value in values:
        assert csv_cells.exact_cell(csv_cells.safe_cell(value)) == value
    table = pd.DataFrame({"label": ["=cmd", "'=cmd", "dog"], "=head": ["+x", "y", "'z"]})
    assert csv_cells.exact_table(csv_cells.safe_table(table)).equals(table)
