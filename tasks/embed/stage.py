"""Embed stage: reads preprocess.json, the split table, the manifest and data/raw/, writes data/embeddings/ (a pretrained
backbone's features of every image, and embeddings.json).

Features are cached by content and by what changes them (tasks/embedding_store.py): a run computes only the images
it has not seen, straight from the raw store at the backbone's size, on every core (or the Dask cluster at
embed.scheduler), with the fastest engine that agrees with Keras on this machine. When the network preprocess
settled on learns from pixels (simple_cnn), the stage has nothing to do and says so in embeddings.json.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from tasks import cpu, dvc_outputs, embedding_store, model_choice, pool, processed_store, progress, stored_images
from tasks.backbones import catalog, feature_engine, feature_exports
from tasks.config import load_config
from tasks.embed.compute import Embedder
from tasks.params import EmbedParams
from tasks.paths import Paths

logger = logging.getLogger(__name__)

CHUNK = 32  # images decoded and run through the backbone together, in one worker
SAMPLE = 64  # new images the engines are compared on before the first are computed
SERIAL_BELOW_CHUNKS = 8  # fewer chunks run in this process: starting workers costs more than it saves


def _engine(params: EmbedParams, backbone: str, image_size: int, earlier: dict[str, Any], sample: np.ndarray,
            threads: int) -> tuple[feature_engine.EngineSpec, dict[str, Any]]:
    """The engine for this run: the one an earlier run chose under the same settings and embed.engine on this kind
    of CPU, else the fastest that agrees with Keras on `sample` (embed.engine: auto), else the one named."""
    machine = sorted(cpu.cpu_flags() & {"avx512_bf16", "amx_bf16", "avx512f", "avx2"})
    chosen = earlier.get("engine") or {}
    spec_fields = chosen.get("spec") or {}
    if (chosen.get("asked") == params.engine and chosen.get("machine") == machine
            and spec_fields.get("backbone") == backbone and spec_fields.get("image_size") == image_size):
        spec = feature_engine.EngineSpec(**spec_fields)
        if spec.file is None or Path(spec.file).is_file():
            return spec, chosen
    if params.engine != "auto":
        files = feature_exports.export_files(backbone, image_size) if params.engine != "keras" else {}
        spec = feature_engine.EngineSpec(backbone, image_size, params.engine, "fp32",
                                         None if params.engine == "keras" else str(files[params.engine]))
        return spec, {"spec": asdict(spec), "machine": machine, "asked": params.engine, "why": "embed.engine",
                      "candidates": []}
    spec, candidates = feature_engine.choose(backbone, image_size, sample, threads)  # logs each engine's figures
    return spec, {"spec": asdict(spec), "machine": machine, "asked": params.engine,
                  "why": "fastest passing the parity check", "candidates": candidates}


def _threads(chunks: int, params: EmbedParams) -> tuple[int, int]:
    """(worker processes, engine threads per worker): all cores in this process for few chunks, else one worker
    per core with one thread each (decoding then runs in parallel too)."""
    workers = pool.worker_count(params.workers)
    if params.scheduler is None and (workers == 1 or chunks < SERIAL_BELOW_CHUNKS):
        return 1, 0
    return workers, 1


def run(params: EmbedParams, max_pixels: int, paths: Paths) -> dict[str, Any]:
    """Compute the features of the images whose features are not stored yet; drop those of images gone."""
    started = time.perf_counter()
    folder = paths.embeddings
    preprocessing = processed_store.read_summary(paths.processed)
    choice = model_choice.Choice.from_record(preprocessing.get("model"))
    dvc_outputs.restore(paths.root, "embed", [folder])
    folder.mkdir(parents=True, exist_ok=True)
    embedding_store.remove_temporary(folder)
    if not choice.on_features:
        embedding_store.remove(folder, embedding_store.shard_names(folder))
        summary = {"used": False, "why": f"train.model is {choice.model}, which learns from pixels ({choice.reason})"}
        embedding_store.write_summary(folder, summary)
        logger.info("embed: nothing to do: %s", summary["why"])
        return summary

    image_size, resize = int(preprocessing["image_size"]), preprocessing["resize"]
    settings = embedding_store.settings(choice.weights_id or "", image_size, resize)
    earlier = embedding_store.read_summary(folder)
    if earlier.get("settings") != settings:
        if embedding_store.shard_names(folder):
            logger.info("embed: the stored features were computed under %s; every image's is computed under %s",
                        earlier.get("settings"), settings)
        embedding_store.remove(folder, embedding_store.shard_names(folder))
        earlier = {}
    table = processed_store.read_table(paths.processed).drop_duplicates("sha256")
    stored = embedding_store.stored_sha256s(folder)
    new = table[~table["sha256"].isin(stored.keys())]
    jobs = stored_images.jobs_for(paths.manifest, new["path"].tolist())
    records = {name: int(count) for name, count in (earlier.get("shard_records") or {}).items()}
    engine_record = earlier.get("engine") or {}
    if jobs:
        decoder = stored_images.Decoder(paths.raw, image_size, resize, max_pixels)
        sample = np.stack([decoder(job) for job in jobs[:SAMPLE]])
        chunks = [jobs[start:start + CHUNK] for start in range(0, len(jobs), CHUNK)]
        workers, threads = _threads(len(chunks), params)
        spec, engine_record = _engine(params, choice.model, image_size, earlier, sample, threads)
        embedder = Embedder(paths.raw, image_size, resize, max_pixels, spec, threads)
        computed = []
        with progress.bar(len(jobs), "image", "embed") as shown:
            for features in pool.ordered_map(embedder, chunks, workers, params.scheduler,
                                             serial_below=SERIAL_BELOW_CHUNKS):
                computed.append(features)
                shown.update(len(features))
        name = embedding_store.write_shard(folder, new["sha256"].tolist(), np.concatenate(computed))
        records[name] = len(jobs)
    live = set(table["sha256"])
    records = embedding_store.compact(folder, live, records)
    summary = {
        "used": True,
        "backbone": choice.model,
        "settings": settings,
        "features": catalog.spec(choice.model).features,
        "images": len(live),
        "engine": engine_record,
        "shard_records": records,
    }
    embedding_store.write_summary(folder, summary)
    logger.info("embed: %s features of %d images: %d computed now, %d reused; %.1f s", choice.model, len(live),
                len(jobs), len(live) - len(jobs), time.perf_counter() - started)
    return summary


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, paths = load_config()
    run(config.embed, config.ingest.max_pixels, paths)
