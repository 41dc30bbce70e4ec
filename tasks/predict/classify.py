"""Classifies every file under a directory: reads the images and a model folder, writes a predictions table (.parquet or .csv).

Streamed and resumable: the files are walked in sorted order and cut into chunks; each finished chunk is written
atomically to OUT.parts/ (see tasks/predict/store.py), so a killed run, started again, classifies only the chunks it had
not finished, and the final table is the same as an uninterrupted run's. A second run over the same directory
with the same model reuses the rows of the earlier table whose file has the same size, mtime and hash.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from tasks import images, model_folder, pool, source_tree
from tasks.config import ArgumentError
from tasks.paths import Paths
from tasks.predict import decode, engine, store

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000  # as ingest.max_pixels


@dataclass(frozen=True)
class PredictOptions:
    top_k: int = 3
    batch_size: int = 64
    chunk_size: int = 1024  # files per committed part: what a killed run can lose
    max_pixels: int = DEFAULT_MAX_PIXELS
    engine: str = "auto"  # auto | keras | onnxruntime | openvino (tasks/predict/engine.py); prepare() resolves auto
    precision: str = "auto"  # auto | fp32 | bf16 | int8

    def check(self) -> None:
        for name in ("top_k", "batch_size", "chunk_size", "max_pixels"):
            if getattr(self, name) < 1:
                raise ArgumentError(f"`{name}` must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class PredictPlan:
    """What prepare() found: the work, in a form that can be sent to other processes."""

    source: Path
    out: Path
    state: Path
    model: model_folder.ModelInfo
    options: PredictOptions
    files: int
    chunks: int
    pending: tuple[int, ...]  # chunks with no finished part
    pending_files: int


@dataclass
class ChunkCounts:
    files: int = 0
    processed: int = 0  # read and classified (or failed): new, changed, or failed the last time
    reused: int = 0  # the earlier table's row, the file's hash unchanged
    process_ids: tuple[int, ...] = ()  # the processes that ran the model

    def add(self, other: ChunkCounts) -> ChunkCounts:
        return ChunkCounts(self.files + other.files, self.processed + other.processed, self.reused + other.reused,
                           tuple(sorted(set(self.process_ids) | set(other.process_ids))))


@dataclass
class PredictSummary:
    output: str
    model_folder: str
    model_version: str
    files: int
    ok: int
    errors: dict[str, int] = field(default_factory=dict)
    resumed: int = 0  # files in chunks an interrupted run had finished
    processed: int = 0
    reused: int = 0
    processes: int = 0  # how many processes ran the model (Dask workers, or this one)
    seconds: float = 0.0
    engine: str = ""  # what ran the model, and at which precision
    precision: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_model(paths: Paths) -> Path:
    """The production model if there is one, else the candidate (with a note in the log)."""
    if model_folder.exists(paths.production):
        return paths.production
    if model_folder.exists(paths.candidate):
        logger.info("no production model in %s; using the candidate model %s", paths.production, paths.candidate)
        return paths.candidate
    raise ArgumentError(f"{paths.production}: no model found (nor in {paths.candidate}); train one (the train stage "
                        f"writes {paths.candidate}), or pass `model`, a folder with model.keras, labels.json and "
                        "model_card.json")


def prepare(source: Path, out: Path, model: Path, options: PredictOptions) -> PredictPlan:
    """Walk `source`, write the plan beside `out` and find which chunks are still to do (the state must be locked)."""
    options.check()
    if not source.is_dir():
        raise ValueError(f"{source}: folder not found; give the folder of images to classify")
    store.output_format(out)
    info = model_folder.read_info(model)
    chosen_engine, chosen_precision = engine.choose(info.folder, options.engine, options.precision)
    options = replace(options, engine=chosen_engine, precision=chosen_precision)
    if options.top_k > len(info.labels):
        logger.info("top_k %d is more than the model's %d labels; using %d", options.top_k, len(info.labels),
                    len(info.labels))
        options = replace(options, top_k=len(info.labels))
    source, out = source.resolve(), out.resolve()
    state = store.state_folder(out)
    # What the finished parts depend on (not the batch size: an image's probabilities do not depend on its batch).
    settings = {"format": 1, "source": os.fsencode(source).decode("utf-8", "backslashreplace"),
                "model_version": info.version, "image_size": info.image_size, "resize": info.resize,
                "top_k": options.top_k, "chunk_size": options.chunk_size, "max_pixels": options.max_pixels}
    resuming = store.open_state(state, settings)
    previous = store.PreviousOutput(out, options.top_k, info.version)
    writer = store.PlanWriter(state, options.top_k)
    files, chunk_index, pending, pending_files, chunk = 0, 0, [], 0, []

    def close_chunk() -> None:
        nonlocal chunk_index, pending_files
        writer.write_chunk(chunk)
        facts = [(row["path"], row["bytes"], row["mtime_ns"]) for row in chunk]
        if not (resuming and store.part_is_current(state, chunk_index, facts)):
            store.part_file(state, chunk_index).unlink(missing_ok=True)  # made from other files
            pending.append(chunk_index)
            pending_files += len(chunk)
        chunk_index += 1
        chunk.clear()

    skipped: dict[str, tuple[int, str]] = {}  # reason -> (how many, the first one)

    def skip(reason: str, name: str) -> None:
        count, example = skipped.get(reason, (0, name))
        skipped[reason] = (count + 1, example)

    for file in source_tree.walk(source, skip):
        path, relative = file.path, file.relative
        if path == out or path.is_relative_to(state):  # the table is being written inside the folder it describes
            continue
        try:
            stat = path.stat()
            size, mtime_ns = stat.st_size, stat.st_mtime_ns
        except OSError:  # gone since the walk: the worker reports it
            size, mtime_ns = -1, -1
        row = {"path": relative, "file": os.fsencode(path), "decode": images.has_image_extension(path),
               "bytes": size, "mtime_ns": mtime_ns}
        chunk.append(row | (previous.find(relative, size, mtime_ns) or {}))
        files += 1
        if len(chunk) == options.chunk_size:
            close_chunk()
    if chunk:
        close_chunk()
    writer.close()
    store.remove_parts_from(state, chunk_index)
    for reason, (count, example) in skipped.items():
        logger.warning("%d %s(s) skipped under %s (links are not followed out of the tree): e.g. %s",
                       count, reason.replace("_", " "), source, example)
    if not files:
        logger.warning("%s: no files found; the table will be empty", source)
    logger.info("predict: %d files in %d chunks under %s; %d chunk(s) already finished by an interrupted run",
                files, chunk_index, source, chunk_index - len(pending))
    return PredictPlan(source, out, state, info, options, files, chunk_index, tuple(pending), pending_files)


def _batches(plan: PredictPlan, chunk_indices: list[int]) -> Iterator[tuple[tuple[int, list[dict], bool], list]]:
    """(chunk index, the batch's plan rows, whether it ends its chunk) and its decode jobs, for each batch."""
    reader = store.PlanReader(plan.state)
    size = plan.options.batch_size
    for index in chunk_indices:
        rows = reader.chunk(index)
        for start in range(0, len(rows), size):
            batch = rows[start:start + size]
            jobs = [decode.FileJob(os.fsdecode(row["file"]), row["decode"], row.get("previous_sha256") or "")
                    for row in batch]
            yield (index, batch, start + size >= len(rows)), jobs


def _rows(plan: PredictPlan, batch: list[dict], result: decode.BatchResult,
          probabilities: np.ndarray) -> list[dict[str, Any]]:
    """The table rows of one batch: predictions for decoded files, earlier rows for reused ones, errors."""
    labels, top_k = plan.model.labels, plan.options.top_k
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    rows, decoded = [], 0
    for planned, file in zip(batch, result.files):
        row: dict[str, Any] = {"path": planned["path"], "status": "ok", "reason": "", "detail": "",
                               "sha256": file.sha256, "bytes": file.bytes, "mtime_ns": file.mtime_ns,
                               "model_version": plan.model.version, "engine": plan.options.engine,
                               "precision": plan.options.precision}
        if file.status == "ok":
            best = order[decoded]
            for rank, label_index in enumerate(best, start=1):
                row[f"top_{rank}_label"] = labels[label_index]
                row[f"top_{rank}_probability"] = float(probabilities[decoded, label_index])
            row["label"], row["confidence"] = row["top_1_label"], row["top_1_probability"]
            decoded += 1
        elif file.status == "reused":
            row |= {name: planned[f"previous_{name}"] for name in store.prediction_columns(top_k)}
        else:
            row |= {"status": "error", "reason": file.reason, "detail": file.detail, "engine": "", "precision": ""}
        rows.append(row)
    return rows


def classify_chunks(plan: PredictPlan, chunk_indices: list[int], decode_workers: int = 0, tensorflow_threads: int = 0,
                    on_progress: Callable[[int], None] | None = None) -> ChunkCounts:
    """Classify the given chunks of a plan and write each one's part; `decode_workers` 1 decodes in this process.

    A chunk whose part exists was finished by an earlier try of the same plan (prepare removed any other), and is
    skipped: a retried task redoes only what it had not finished.
    """
    chunk_indices = [index for index in chunk_indices if not store.part_file(plan.state, index).exists()]
    if not chunk_indices:
        return ChunkCounts()
    last_chunk_files = plan.files - (plan.chunks - 1) * plan.options.chunk_size
    files = sum(last_chunk_files if index == plan.chunks - 1 else plan.options.chunk_size for index in chunk_indices)
    if decode_workers == 0 and files < pool.SERIAL_BELOW:
        decode_workers = 1
    settings = decode.DecodeSettings(plan.model.image_size, plan.model.resize, plan.options.max_pixels)
    counts, chunk_rows = ChunkCounts(process_ids=(os.getpid(),)), []
    tags: collections.deque[tuple[int, list[dict], bool]] = collections.deque()

    def jobs() -> Iterator[list[decode.FileJob]]:  # the batches' jobs for the workers; their tags stay here
        for tag, batch_jobs in _batches(plan, chunk_indices):
            tags.append(tag)
            yield batch_jobs

    with pool.ProcessPool(decode_workers, warm=True) as workers:  # the workers start while the model loads
        runner = engine.open_engine(plan.model, plan.options.engine, plan.options.precision, tensorflow_threads)
        for result in workers.imap(functools.partial(decode.read_batch, settings=settings), jobs()):
            index, batch, ends_chunk = tags.popleft()
            chunk_rows += _rows(plan, batch, result, runner.probabilities(result.pixels))
            reused = sum(file.status == "reused" for file in result.files)
            counts.processed += len(result.files) - reused
            counts.reused += reused
            if ends_chunk:
                store.write_part(plan.state, index, chunk_rows, plan.options.top_k)
                counts.files += len(chunk_rows)
                if on_progress is not None:
                    on_progress(len(chunk_rows))
                chunk_rows = []
    return counts


def finish(plan: PredictPlan, counts: ChunkCounts, seconds: float) -> PredictSummary:
    """Merge the parts into the table (written atomically) and remove the resume state."""
    statuses = store.merge(plan.state, plan.chunks, plan.out, plan.options.top_k)
    ok = statuses.pop("ok", 0)
    summary = PredictSummary(str(plan.out), str(plan.model.folder), plan.model.version, plan.files, ok, statuses,
                             plan.files - plan.pending_files, counts.processed, counts.reused, len(counts.process_ids),
                             round(seconds, 1), plan.options.engine, plan.options.precision)
    logger.info("predict: %d files, %d ok, %d errors (%s); %d classified, %d reused from the earlier table, %d from an "
                "interrupted run; wrote %s in %.1f s", summary.files, ok, sum(statuses.values()),
                ", ".join(f"{reason} {count}" for reason, count in sorted(statuses.items())) or "none",
                summary.processed, summary.reused, summary.resumed, plan.out, seconds)
    return summary


def run(source: Path, out: Path, model: Path, options: PredictOptions = PredictOptions(),
        decode_workers: int = 0) -> PredictSummary:
    """Classify every file under `source` into the table `out`, in this process (decoding over all cores)."""
    started = time.perf_counter()
    state = store.state_folder(out.resolve())
    with store.locked(state):
        plan = prepare(source, out, model, options)
        with tqdm(total=plan.files, initial=plan.files - plan.pending_files, unit="file", desc="predict",
                  disable=None, smoothing=0.05) as progress:
            counts = classify_chunks(plan, list(plan.pending), decode_workers, on_progress=progress.update)
        return finish(plan, counts, time.perf_counter() - started)
