"""A label table's errors name the file and the line, never what the file holds (issue 27 item 4): a private file
given as `ingest.labels` must not have its first line printed, nor kept in a run's state."""

from __future__ import annotations

import pytest

from tasks import label_table

SECRET = "s3cr3t-first-line-hunter2"


@pytest.mark.parametrize("name, text", [
    ("notes.csv", f"{SECRET}\nmore private text\n"),  # no path or label column: the header is the first line
    ("labels.csv", f"path,label,split\na.jpg,cat,{SECRET}\n"),  # a bad split value
    ("labels.csv", f"path,label\na.jpg,cat\nb.jpg,{SECRET}\na.jpg,{SECRET}-2\n"),  # a path listed twice
    ("ragged.csv", f"path,label\na.jpg,cat\nb.jpg,{SECRET},x,y\n"),  # more fields than the header
])
def test_a_bad_table_is_named_with_its_line_never_quoted(tmp_path, name, text):
    file = tmp_path / name
    file.write_text(text)
    with pytest.raises(ValueError) as raised:
        label_table.read(file)
    message = str(raised.value)
    assert str(file) in message and SECRET not in message, message


def test_a_file_that_is_no_table_at_all_is_not_quoted(tmp_path):
    file = tmp_path / "key.parquet"
    file.write_bytes(f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n".encode())
    with pytest.raises(ValueError) as raised:
        label_table.read(file)
    assert "cannot be read as a Parquet table" in str(raised.value) and SECRET not in str(raised.value)


def test_the_line_of_a_bad_row_is_named(tmp_path):
    file = tmp_path / "labels.csv"
    file.write_text("path,label,split\na.jpg,cat,train\nb.jpg,dog,holdout\n")
    with pytest.raises(ValueError, match="split of line 3 is not one of"):
        label_table.read(file)
    file.write_text("path,label\na.jpg,cat\nb.jpg,dog\na.jpg,dog\n")
    with pytest.raises(ValueError, match=r"lists 'a.jpg' twice, differently \(line 2 and line 4\)"):
        label_table.read(file)
