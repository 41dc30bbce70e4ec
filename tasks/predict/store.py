"""The prediction table and its resume state: reads and writes OUT (.parquet or .csv) and the OUT.parts/ folder beside it.

OUT.parts/ holds journal.json (the settings the parts were made with), plan.parquet (the files to classify, one
row group per chunk) and part-NNNNNN.parquet (one chunk's finished rows, each written atomically). Every chunk
is a run of consecutive entries in sorted path order, so the parts concatenated in chunk order are the table.
A row's `path` is readable text (a byte that is not UTF-8 shows as \\xNN); `path_bytes_hex` is the exact name, the
key by which a row is found again. `settings_id` identifies everything a row's pixels and probabilities depend on.

Columns: `label` is the predicted class, and `confidence` its probability; top_N_label and top_N_probability the
N-th likeliest labels. For a multi-label model the columns are the same, so readers of single-label tables read
them: `label` is the label set (the labels whose probability reaches the model's threshold for it, sorted and
";"-joined, empty for none), `confidence` how sure the least sure yes-or-no of that set is (min over labels of p
for a label given, 1 - p for one not given), and the top_N columns hold every label with its own (sigmoid)
probability, likeliest first.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks import atomic, csv_cells
from tasks.config import ArgumentError
from tasks.predict import machine

logger = logging.getLogger(__name__)

FORMATS = {".parquet": "parquet", ".csv": "csv"}
JOURNAL = "journal.json"
PLAN = "plan.parquet"
_READ_ROWS = 8192


def output_format(out: Path) -> str:
    if out.suffix.lower() not in FORMATS:
        raise ArgumentError(f"`out` {out}: the table must be a .parquet or .csv file")
    return FORMATS[out.suffix.lower()]


def state_folder(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def part_file(state: Path, index: int) -> Path:
    return state / f"part-{index:06d}.parquet"


def top_columns(top_k: int) -> list[str]:
    return [f"top_{rank}_{kind}" for rank in range(1, top_k + 1) for kind in ("label", "probability")]


def output_schema(top_k: int) -> pa.Schema:
    """path, status, label, confidence, top_1_label, top_1_probability, ..., reason, detail, file facts, model,
    settings, the exact name, and the engine and precision that computed the probabilities."""
    fields = [("path", pa.string()), ("status", pa.string()), ("label", pa.string()), ("confidence", pa.float32())]
    fields += [(name, pa.string() if name.endswith("_label") else pa.float32()) for name in top_columns(top_k)]
    fields += [("reason", pa.string()), ("detail", pa.string()), ("sha256", pa.string()), ("bytes", pa.int64()),
               ("mtime_ns", pa.int64()), ("model_version", pa.string()), ("settings_id", pa.string()),
               ("path_bytes_hex", pa.string()), ("engine", pa.string()), ("precision", pa.string())]
    return pa.schema(fields)


def prediction_columns(top_k: int) -> list[str]:
    """The columns an earlier run's row gives back when the same file is reused."""
    return ["label", "confidence", *top_columns(top_k), "sha256", "engine", "precision"]


def plan_schema(top_k: int) -> pa.Schema:
    previous = [pa.field(f"previous_{field.name}", field.type) for field in output_schema(top_k)
                if field.name in prediction_columns(top_k)]
    return pa.schema([("path", pa.string()), ("path_bytes", pa.binary()), ("file", pa.binary()),
                      ("decode", pa.bool_()), ("skipped", pa.string()), ("bytes", pa.int64()), ("mtime_ns", pa.int64()),
                      *previous])


def _writing(path: Path) -> AbstractContextManager[None]:
    """Stop with a message that says what filled up (or failed) for an error of the machine while writing `path`."""
    return machine.stops_on_machine_errors(path, "writing", "choose another `out`",
                                           "the chunks already finished are kept")


@contextmanager
def locked(state: Path) -> Iterator[None]:
    """Hold OUT.parts/lock for a run: a second run writing the same table is refused, not interleaved."""
    with _writing(state / "lock"):
        state.mkdir(parents=True, exist_ok=True)
        handle = (state / "lock").open("w")
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArgumentError(f"{state}: another imgpipe predict is writing this table; wait for it to end "
                             "or choose another `out`") from None
        yield  # the lock goes with the file handle, also when the process is killed


def open_state(state: Path, settings: dict[str, Any]) -> bool:
    """Keep the parts of an interrupted run made with the same settings, else empty the folder; True if kept."""
    journal = state / JOURNAL
    previous = None
    if journal.is_file():
        try:
            previous = json.loads(journal.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            logger.warning("%s: unreadable journal; starting over", journal)
    for leftover in state.glob(".*.partial"):  # temporary files of a killed run
        leftover.unlink(missing_ok=True)
    if previous == settings:
        return True
    if previous is not None:
        logger.info("%s: left by a run with other settings (model, top-k, chunk size or source); starting over", state)
    for stale in state.glob("part-*.parquet"):
        stale.unlink()
    with _writing(journal):
        atomic.write_json(journal, settings)
    return False


def part_is_current(state: Path, index: int, files: list[tuple[str, int | None, int | None]]) -> bool:
    """Whether chunk `index` is finished for exactly these (path_bytes_hex, bytes, mtime_ns)."""
    part = part_file(state, index)
    if not part.is_file():
        return False
    columns = ("path_bytes_hex", "bytes", "mtime_ns")
    try:
        table = pq.read_table(part, columns=list(columns))
    except Exception as error:  # a part is written atomically, so this is damage from outside: redo the chunk
        logger.warning("%s: unreadable (%s); its chunk is classified again", part, error)
        return False
    return list(zip(*(table.column(name).to_pylist() for name in columns))) == files


def remove_parts_from(state: Path, first_index: int) -> None:
    for part in state.glob("part-*.parquet"):
        if int(part.stem.removeprefix("part-")) >= first_index:
            part.unlink()


def write_part(state: Path, index: int, rows: list[dict[str, Any]], top_k: int) -> None:
    table = pa.Table.from_pylist(rows, schema=output_schema(top_k))
    with _writing(part_file(state, index)), atomic.atomic_path(part_file(state, index)) as temporary:
        pq.write_table(table, temporary, compression="zstd")


class PlanWriter:
    """Writes plan.parquet chunk by chunk (one row group each), under a temporary name until closed."""

    def __init__(self, state: Path, top_k: int) -> None:
        self._schema = plan_schema(top_k)
        self._path = state / PLAN
        self._target = atomic.atomic_path(self._path)
        with _writing(self._path):
            self._writer = pq.ParquetWriter(self._target.__enter__(), self._schema, compression="zstd")

    def write_chunk(self, rows: list[dict[str, Any]]) -> None:
        with self._abandoned_on_error():
            self._writer.write_table(pa.Table.from_pylist(rows, schema=self._schema), row_group_size=len(rows) + 1)

    def close(self) -> None:
        with self._abandoned_on_error():
            self._writer.close()
        with _writing(self._path):
            self._target.__exit__(None, None, None)

    @contextmanager
    def _abandoned_on_error(self) -> Iterator[None]:
        """On any error the temporary file is removed (a disk-full plan is not left taking the space)."""
        try:
            with _writing(self._path):
                yield
        except BaseException as error:
            try:
                self._writer.close()
            except OSError:
                pass
            self._target.__exit__(type(error), error, error.__traceback__)
            raise


class PlanReader:
    def __init__(self, state: Path) -> None:
        self._file = pq.ParquetFile(state / PLAN)

    def chunk(self, index: int) -> list[dict[str, Any]]:
        return self._file.read_row_group(index).to_pylist()


def _read_rows(out: Path) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """The columns of an existing table and its rows, streamed."""
    if FORMATS[out.suffix.lower()] == "parquet":
        table = pq.ParquetFile(out)
        return table.schema_arrow.names, (row for batch in table.iter_batches(_READ_ROWS) for row in batch.to_pylist())
    columns = [csv_cells.exact_cell(name) for name in pd.read_csv(out, nrows=0).columns]
    chunks = pd.read_csv(out, chunksize=_READ_ROWS, dtype=str, keep_default_na=False)
    return columns, (row for chunk in chunks for row in csv_cells.exact_table(chunk).to_dict("records"))


class PreviousOutput:
    """The rows of the table an earlier run wrote to OUT, looked up in sorted path order as the walk goes."""

    def __init__(self, out: Path, top_k: int, settings_id: str) -> None:
        self._rows: Iterator[dict[str, Any]] = iter(())
        self._current: dict[str, Any] | None = None
        self._group_path: str | None = None
        self._group: dict[str, dict[str, Any]] = {}  # the rows of one path text, by path_bytes_hex (usually one)
        self._settings_id = settings_id
        self._top_k = top_k
        if not out.is_file():
            return
        try:
            columns, rows = _read_rows(out)
        except Exception as error:
            logger.warning("%s: cannot read the earlier table (%s); every file is classified again", out, error)
            return
        if columns != output_schema(top_k).names:
            logger.info("%s: written with other columns (another top_k, or an older imgpipe); every file is "
                        "classified again", out)
            return
        self._rows = rows
        self._current = next(self._rows, None)

    def _advance_to(self, path: str) -> None:
        """Gather the rows whose path text is `path`, skipping the smaller ones; paths must not decrease."""
        self._group_path, self._group = path, {}
        try:
            while self._current is not None and str(self._current["path"]) <= path:
                row, self._current = self._current, next(self._rows, None)
                if str(row["path"]) == path:
                    self._group[str(row["path_bytes_hex"])] = row
                if self._current is not None and str(self._current["path"]) < str(row["path"]):
                    raise ValueError("rows are not in sorted path order")
        except Exception as error:
            logger.warning("earlier table unusable from row with path %s on (%s); the rest is classified again",
                           path, error)
            self._current = None

    def find(self, path: str, path_bytes_hex: str, size: int, mtime_ns: int) -> dict[str, Any] | None:
        """The earlier ok row for this file, made with the same settings, with the same size and mtime."""
        if path != self._group_path:
            self._advance_to(path)
        row = self._group.get(path_bytes_hex)
        if row is None or row["status"] != "ok" or row["settings_id"] != self._settings_id:
            return None
        if (int(row["bytes"]), int(row["mtime_ns"])) != (size, mtime_ns):
            return None
        return {f"previous_{name}": _typed(name, row[name]) for name in prediction_columns(self._top_k)}


def _typed(name: str, value: Any) -> Any:
    """A value read back from CSV (all text) as the table's type."""
    if name == "confidence" or name.endswith("_probability"):
        return None if value in ("", None) else float(value)
    return None if value == "" and name.endswith("label") else str(value)


def merge(state: Path, chunks: int, out: Path, top_k: int) -> dict[tuple[str, str], int]:
    """Concatenate the parts in chunk order into OUT (written atomically); return the rows per (status, reason)."""
    missing = [index for index in range(chunks) if not part_file(state, index).is_file()]
    if missing:
        raise RuntimeError(f"{out}: {len(missing)} chunk(s) unfinished (e.g. {missing[0]}); run the same command "
                           "again to finish them")
    counts: dict[tuple[str, str], int] = {}
    schema = output_schema(top_k)
    with _writing(out), atomic.atomic_path(out) as temporary:
        if output_format(out) == "parquet":
            with pq.ParquetWriter(temporary, schema, compression="zstd") as writer:
                for index in range(chunks):
                    table = pq.read_table(part_file(state, index), schema=schema)
                    writer.write_table(table)
                    _count(table, counts)
        else:
            with temporary.open("w", encoding="utf-8", newline="") as handle:
                if not chunks:
                    handle.write(",".join(schema.names) + "\n")
                for index in range(chunks):
                    table = pq.read_table(part_file(state, index), schema=schema)
                    # paths and labels that start like a formula are escaped (OWASP); Parquet stays exact
                    csv_cells.safe_table(table.to_pandas()).to_csv(handle, header=index == 0, index=False)
                    _count(table, counts)
    shutil.rmtree(state, ignore_errors=True)
    return counts


def _count(table: pa.Table, counts: dict[tuple[str, str], int]) -> None:
    for status, reason in zip(table.column("status").to_pylist(), table.column("reason").to_pylist()):
        key = (status, "" if status == "ok" else reason)
        counts[key] = counts.get(key, 0) + 1
