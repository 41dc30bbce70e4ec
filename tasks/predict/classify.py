"""Classifies every file under a directory: reads the images and a model folder, writes a predictions table (.parquet or .csv).

Streamed and resumable: the files are walked in sorted order and cut into chunks; each finished chunk is written
atomically to OUT.parts/ (see tasks/predict/store.py), so a killed run, started again, classifies only the chunks it had
not finished, and the final table is the same as an uninterrupted run's. A second run over the same directory
with the same model and settings reuses the rows of the earlier table whose file has the same size, mtime and hash.
Every entry the walk meets gets a row: hidden entries, links that are not followed and special files a `skipped` one.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import PIL

from tasks import images, label_sets, model_folder, pool, progress, registry
from tasks.config import ArgumentError
from tasks.engines import engine
from tasks.paths import Paths
from tasks.predict import decode, entries, machine, store
from tasks.predict.options import PredictOptions  # a call's settings and their defaults

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictPlan:
    """What prepare() found: the work, in a form that can be sent to other processes."""

    source: Path
    out: Path
    state: Path
    model: model_folder.ModelInfo
    options: PredictOptions
    settings_id: str  # what the rows' pixels and probabilities depend on (see settings_id())
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
    skipped: dict[str, int] = field(default_factory=dict)  # rows of entries not read, by reason (hidden, link, ...)
    resumed: int = 0  # files in chunks an interrupted run had finished
    processed: int = 0
    reused: int = 0
    processes: int = 0  # how many processes ran the model (Dask workers, or this one)
    seconds: float = 0.0
    engine: str = ""  # what ran the model, and at which precision
    precision: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _shown(path: Path) -> str:
    """`path` relative to the current folder when it is below it (as a user would type it)."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def default_model(paths: Paths) -> Path:
    """The production model as history.jsonl commits it (the registry's copy while a stopped rollback or
    promotion left the production folder behind); never a model nobody chose (a candidate the gate may have
    refused)."""
    production = registry.production_model(paths)
    if production is not None:
        return production
    if model_folder.exists(paths.candidate):
        raise ArgumentError(
            f"{paths.production}: no production model. The candidate model in {paths.candidate} was not promoted (the "
            f"gate refused it, or no run got that far), so it is not used unasked: choose it explicitly with "
            f"`model` {_shown(paths.candidate)}, or promote it (imgpipe promote)")
    raise ArgumentError(f"{paths.production}: no model found (nor in {paths.candidate}); train one (the train stage "
                        f"writes {paths.candidate}), or pass `model`, a folder with model.keras, labels.json and "
                        "model_card.json")


def settings_id(info: model_folder.ModelInfo, max_pixels: int, engine_name: str = "keras",
                precision: str = "fp32") -> tuple[str, dict[str, Any]]:
    """A short id of everything a row's pixels and probabilities depend on, and those settings themselves: the
    engine and precision too, and the version of what runs the model (Keras is imported only when it does)."""
    if engine_name == "keras":
        import keras

        backend = keras.backend.backend()
        runtime = {"keras": keras.__version__, "backend": f"{backend} {_version(backend)}"}
    else:
        runtime = {engine_name: _version(engine.PACKAGES[engine_name])}
    settings = {"model_version": info.version, "image_size": info.image_size, "resize": info.resize,
                "max_pixels": max_pixels, "decode_version": images.DECODE_VERSION, "pillow": PIL.__version__,
                "engine": engine_name, "precision": precision, **runtime}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return digest, settings


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def prepare(source: Path, out: Path, model: Path, options: PredictOptions) -> PredictPlan:
    """Walk `source`, write the plan beside `out` and find which chunks are still to do (the state must be locked)."""
    options.check()
    if not source.is_dir():
        raise ValueError(f"{source}: folder not found; give the folder of images to classify")
    store.output_format(out)
    info = model_folder.read_info(model)
    chosen_engine, chosen_precision = engine.choose(info.folder, options.engine, options.precision)
    options = replace(options, engine=chosen_engine, precision=chosen_precision)
    if info.multi_label and options.top_k != len(info.labels):
        logger.info("multi-label model: the table gives every one of its %d labels' probability (top_k %d ignored)",
                    len(info.labels), options.top_k)
        options = replace(options, top_k=len(info.labels))
    if options.top_k > len(info.labels):
        logger.info("top_k %d is more than the model's %d labels; using %d", options.top_k, len(info.labels),
                    len(info.labels))
        options = replace(options, top_k=len(info.labels))
    source, out = source.resolve(), out.resolve()
    state = store.state_folder(out)
    identity, depends_on = settings_id(info, options.max_pixels, options.engine, options.precision)
    # What the finished parts depend on (not the batch size: an image's probabilities do not depend on its batch).
    settings = {"format": 2, "source": os.fsencode(source).decode("utf-8", "backslashreplace"),
                "top_k": options.top_k, "chunk_size": options.chunk_size, "settings_id": identity, **depends_on}
    resuming = store.open_state(state, settings)
    previous = store.PreviousOutput(out, options.top_k, identity)
    writer = store.PlanWriter(state, options.top_k)
    files, chunk_index, pending, pending_files, chunk = 0, 0, [], 0, []

    def close_chunk() -> None:
        nonlocal chunk_index, pending_files
        writer.write_chunk(chunk)
        facts = [(row["path_bytes"].hex(), row["bytes"], row["mtime_ns"]) for row in chunk]
        if not (resuming and store.part_is_current(state, chunk_index, facts)):
            store.part_file(state, chunk_index).unlink(missing_ok=True)  # made from other files
            pending.append(chunk_index)
            pending_files += len(chunk)
        chunk_index += 1
        chunk.clear()

    skipped: dict[str, tuple[int, str]] = {}  # reason -> (how many, the first one)
    for row in entries.plan_rows(source, out, state, options.follow_file_links):
        if row["skipped"]:
            count, example = skipped.get(row["skipped"], (0, row["path"]))
            skipped[row["skipped"]] = (count + 1, example)
        else:
            row |= previous.find(row["path"], row["path_bytes"].hex(), row["bytes"], row["mtime_ns"]) or {}
        chunk.append(row)
        files += 1
        if len(chunk) == options.chunk_size:
            close_chunk()
    if chunk:
        close_chunk()
    writer.close()
    store.remove_parts_from(state, chunk_index)
    entries.log_skipped(source, files, skipped)
    logger.info("predict: %d files in %d chunks under %s; %d chunk(s) already finished by an interrupted run",
                files, chunk_index, source, chunk_index - len(pending))
    return PredictPlan(source, out, state, info, options, identity, files, chunk_index, tuple(pending),
                       pending_files)


def _batches(plan: PredictPlan, chunk_indices: list[int]) -> Iterator[tuple[tuple[int, list[dict], bool], list]]:
    """(chunk index, the batch's plan rows, whether it ends its chunk) and its decode jobs, for each batch."""
    reader = store.PlanReader(plan.state)
    size = plan.options.batch_size
    for index in chunk_indices:
        rows = reader.chunk(index)
        for start in range(0, len(rows), size):
            batch = rows[start:start + size]
            jobs = [decode.FileJob(row["file"], row["decode"], row.get("previous_sha256") or "", row["skipped"])
                    for row in batch]
            yield (index, batch, start + size >= len(rows)), jobs


def _rows(plan: PredictPlan, batch: list[dict], result: decode.BatchResult,
          probabilities: np.ndarray) -> list[dict[str, Any]]:
    """The table rows of one batch: predictions for decoded files, earlier rows for reused ones, errors, skipped."""
    labels, top_k, thresholds = plan.model.labels, plan.options.top_k, plan.model.thresholds
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    if thresholds is not None:  # multi-label: the set of labels at or above their thresholds
        label_cells = label_sets.cells_from(label_sets.decide(probabilities, thresholds), labels)
        confidences = label_sets.decision_confidence(probabilities, thresholds)
    rows, decoded = [], 0
    for planned, file in zip(batch, result.files):
        row: dict[str, Any] = {"path": planned["path"], "status": "ok", "reason": "", "detail": "",
                               "sha256": file.sha256, "bytes": file.bytes, "mtime_ns": file.mtime_ns,
                               "model_version": plan.model.version, "settings_id": plan.settings_id,
                               "path_bytes_hex": planned["path_bytes"].hex(), "engine": plan.options.engine,
                               "precision": plan.options.precision}
        if file.status == "ok":
            best = order[decoded]
            for rank, label_index in enumerate(best, start=1):
                row[f"top_{rank}_label"] = labels[label_index]
                row[f"top_{rank}_probability"] = float(probabilities[decoded, label_index])
            if thresholds is None:
                row["label"], row["confidence"] = row["top_1_label"], row["top_1_probability"]
            else:
                row["label"], row["confidence"] = label_cells[decoded], float(confidences[decoded])
            decoded += 1
        elif file.status == "reused":
            row |= {name: planned[f"previous_{name}"] for name in store.prediction_columns(top_k)}
        elif file.status == "skipped":
            row |= {"status": "skipped", "reason": file.reason, "detail": entries.SKIPPED_DETAILS[file.reason],
                    "engine": "", "precision": ""}
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
    settings = decode.DecodeSettings(str(plan.source), plan.model.image_size, plan.model.resize,
                                     plan.options.max_pixels)
    counts, chunk_rows = ChunkCounts(process_ids=(os.getpid(),)), []
    tags: collections.deque[tuple[int, list[dict], bool]] = collections.deque()

    def jobs() -> Iterator[list[decode.FileJob]]:  # the batches' jobs for the workers; their tags stay here
        for tag, batch_jobs in _batches(plan, chunk_indices):
            tags.append(tag)
            yield batch_jobs

    reading = machine.stops_on_machine_errors(plan.source, "reading", "", "the chunks already finished are kept")
    with reading, pool.ProcessPool(decode_workers, warm=True) as workers:  # the workers start while the model loads
        runner = engine.open_engine(plan.model, plan.options.engine, plan.options.precision, tensorflow_threads)
        for result in workers.imap(functools.partial(decode.read_batch, settings=settings), jobs()):
            index, batch, ends_chunk = tags.popleft()
            chunk_rows += _rows(plan, batch, result, runner.probabilities(result.pixels))
            reused = sum(file.status == "reused" for file in result.files)
            counts.processed += sum(file.status in ("ok", "error") for file in result.files)
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
    ok = statuses.pop(("ok", ""), 0)
    errors = {reason: count for (status, reason), count in sorted(statuses.items()) if status == "error"}
    skipped = {reason: count for (status, reason), count in sorted(statuses.items()) if status == "skipped"}
    summary = PredictSummary(str(plan.out), str(plan.model.folder), plan.model.version, plan.files, ok, errors,
                             skipped, plan.files - plan.pending_files, counts.processed, counts.reused,
                             len(counts.process_ids), round(seconds, 1), plan.options.engine, plan.options.precision)
    logger.info("predict: %d files, %d ok, %d errors (%s), %d skipped (%s); %d classified, %d reused from the earlier "
                "table, %d from an interrupted run; wrote %s in %.1f s", summary.files, ok, sum(errors.values()),
                _counted(errors), sum(skipped.values()), _counted(skipped), summary.processed, summary.reused,
                summary.resumed, plan.out, seconds)
    return summary


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in counts.items()) or "none"


def run(source: Path, out: Path, model: Path, options: PredictOptions = PredictOptions(),
        decode_workers: int = 0) -> PredictSummary:
    """Classify every file under `source` into the table `out`, in this process (decoding over all cores)."""
    started = time.perf_counter()
    state = store.state_folder(out.resolve())
    with store.locked(state):
        plan = prepare(source, out, model, options)
        with progress.bar(plan.files, "file", "predict", initial=plan.files - plan.pending_files) as shown:
            counts = classify_chunks(plan, list(plan.pending), decode_workers, on_progress=shown.update)
        return finish(plan, counts, time.perf_counter() - started)
