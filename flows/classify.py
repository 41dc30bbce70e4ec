"""The bulk classification flow: reads a folder of images and a model folder, writes a predictions table; Dask when asked."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.futures import as_completed
from prefect.settings import PREFECT_API_URL, temporary_settings
from tqdm import tqdm

from tasks.config import load_config
from tasks.predict import classify, sizing, store
from tasks.predict.options import DEFAULT_OUT, DEFAULT_WORKERS, MIN_FILES_PER_WORKER, PredictOptions
from tasks.predict import copy_into as copying

SHARDS_PER_WORKER = sizing.SHARDS_PER_WORKER


def shard(chunks: list[int], shards: int) -> list[list[int]]:
    """Split the chunk indices into at most `shards` runs of consecutive chunks of near-equal length."""
    shards = max(1, min(shards, len(chunks)))
    size, extra = divmod(len(chunks), shards)
    runs, start = [], 0
    for index in range(shards):
        end = start + size + (index < extra)
        runs.append(chunks[start:end])
        start = end
    return [run for run in runs if run]


@contextmanager
def api_for_workers(address: str | None) -> Iterator[None]:
    """Dask workers report their task runs to this flow's Prefect API: without PREFECT_API_URL that is a temporary
    local server, which they must be told of, or each would start its own."""
    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the one this process already runs in ephemeral mode
    server.start()
    if address:
        logging.getLogger(__name__).warning(
            "PREFECT_API_URL is not set: workers of %s must reach this machine's temporary Prefect server at %s; "
            "set PREFECT_API_URL to a server they can reach", address, server.api_url)
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield


@task(name="plan", cache_policy=NONE)
def plan_files(source: Path, out: Path, model: Path, options: classify.PredictOptions) -> classify.PredictPlan:
    return classify.prepare(source, out, model, options)


@task(name="classify", cache_policy=NONE, retries=1)
def classify_shard(plan: classify.PredictPlan, chunks: list[int], decode_workers: int, tensorflow_threads: int,
                   show_progress: bool = False) -> classify.ChunkCounts:
    """Classify some chunks of the plan; a retry redoes only the chunks that have no part yet."""
    with tqdm(total=plan.files, initial=plan.files - plan.pending_files, unit="file", desc="predict",
              disable=None if show_progress else True) as progress:
        done = classify.classify_chunks(plan, chunks, decode_workers, tensorflow_threads, progress.update)
    get_run_logger().info("classified %d files in %d chunk(s) (%d reused)", done.files, len(chunks), done.reused)
    return done


@flow(name="classify-shards")
def classify_on_dask(plan: classify.PredictPlan, shards: list[list[int]]) -> classify.ChunkCounts:
    """One task per shard on the Dask cluster; each worker decodes and predicts with one thread."""
    futures = [classify_shard.submit(plan, chunks, 1, 1) for chunks in shards]
    total = classify.ChunkCounts()
    with tqdm(total=plan.files, initial=plan.files - plan.pending_files, unit="file", desc="predict",
              disable=None) as progress:
        for future in as_completed(futures):
            counts = future.result()
            total = total.add(counts)
            progress.update(counts.files)
    return total


@task(name="merge", cache_policy=NONE)
def merge_parts(plan: classify.PredictPlan, counts: classify.ChunkCounts, seconds: float) -> classify.PredictSummary:
    return classify.finish(plan, counts, seconds)


@task(name="copy-into", cache_policy=NONE)
def copy_files(table: Path, source: Path, destination: Path, link: bool) -> copying.CopySummary:
    return copying.copy_into(table, source, destination, link)


@flow(name="classify_directory", log_prints=True)
def classify_directory(
    source: str,
    out: str = DEFAULT_OUT,
    model: str | None = None,
    top_k: int = PredictOptions.top_k,
    batch_size: int = PredictOptions.batch_size,
    workers: int = DEFAULT_WORKERS,
    address: str | None = None,
    copy_into: str | None = None,
    link: bool = False,
    chunk_size: int = PredictOptions.chunk_size,
    max_pixels: int = PredictOptions.max_pixels,
    engine: str = PredictOptions.engine,
    precision: str = PredictOptions.precision,
    follow_file_links: bool = PredictOptions.follow_file_links,
    min_files_per_worker: int = MIN_FILES_PER_WORKER,
) -> dict[str, Any]:
    """Classify every file under `source` into the table `out` (.parquet or .csv), resuming an interrupted run.

    workers 1 (and no address): this process, decoding over all cores. workers N > 1: a local Dask cluster of N
    processes, when there are at least `min_files_per_worker` files per worker (else this process). address: an
    existing Dask scheduler, whose workers must see `source`, `out` and the model folder.
    """
    from prefect_dask import DaskTaskRunner  # only needed here: the single-process path never starts Dask

    started = time.perf_counter()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    source_path, out_path = Path(source).expanduser().resolve(), Path(out).expanduser().resolve()
    model_folder = Path(model).expanduser() if model else classify.default_model(load_config()[1])
    options = PredictOptions(top_k=top_k, batch_size=batch_size, chunk_size=chunk_size, max_pixels=max_pixels,
                                      engine=engine, precision=precision,
                                      follow_file_links=follow_file_links)
    # chunks enough for every worker; one process for a folder too small to repay a cluster's start
    use_cluster, sized = sizing.choose(source_path, out_path, workers, chunk_size, cluster_running=bool(address),
                                       min_files_per_worker=min_files_per_worker)
    options = replace(options, chunk_size=sized)
    with store.locked(store.state_folder(out_path)):
        plan = plan_files(source_path, out_path, model_folder, options)
        shards = shard(list(plan.pending), SHARDS_PER_WORKER * workers)
        if shards and use_cluster:
            runner = DaskTaskRunner(address=address) if address else DaskTaskRunner(
                cluster_class="distributed.LocalCluster",
                cluster_kwargs={"n_workers": min(workers, len(shards)), "processes": True, "threads_per_worker": 1,
                                "dashboard_address": ":0"})
            with api_for_workers(address):
                counts = classify_on_dask.with_options(task_runner=runner)(plan, shards)
        else:
            counts = classify_shard(plan, list(plan.pending), 0, 0, show_progress=True)
        summary = merge_parts(plan, counts, time.perf_counter() - started).as_dict()
    if copy_into:
        summary["copy_into"] = copy_files(out_path, source_path, Path(copy_into).expanduser(), link).as_dict()
    create_table_artifact(
        key="predictions-summary",
        table=[{"files": summary["files"], "ok": summary["ok"], "errors": sum(summary["errors"].values()),
                "skipped": sum(summary["skipped"].values()), "classified": summary["processed"], "reused": summary["reused"], "resumed": summary["resumed"],
                "seconds": summary["seconds"], "model_version": summary["model_version"], "table": summary["output"]}],
        description=f"Bulk classification of {source_path}",
    )
    return summary
