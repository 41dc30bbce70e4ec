"""`imgpipe predict`: classifies a folder in this process, or through the classify flow on Dask when that pays.
Reads the folder and the model folder (the project's production model unless one is named); writes the table and,
when asked, the copies."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flows import prefect_setup
from tasks.predict.options import PredictOptions


def predict(source: Path, out: Path, model: str | None, repo: str | Path, options: PredictOptions, workers: int,
            scheduler: str | None, min_files_per_worker: int, copy_into: Path | None, link: bool) -> dict[str, Any]:
    """Classify every file under `source` into `out`; the summary (classify.PredictSummary's, with `copy_into`)."""
    root = Path(repo).resolve()
    if model is None:  # the project's production model; `repo` names the project
        from tasks.config import load_config
        from tasks.predict.classify import default_model

        model = str(default_model(load_config(root / "params.yaml")[1]))
    if workers > 1 and not scheduler:  # no Prefect server, no cluster, for a small folder
        from tasks.predict import sizing

        if not sizing.choose(source, out, workers, options.chunk_size, min_files_per_worker=min_files_per_worker)[0]:
            workers = 1
    if workers > 1 or scheduler:  # Prefect's Dask task runner shards the files
        prefect_setup.use_project(prefect_setup.find_project(root), temporary_server=True)
        from flows.classify import classify_directory

        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # a line per worker event otherwise
        return classify_directory(
            source=str(source), out=str(out), model=model, top_k=options.top_k, batch_size=options.batch_size,
            workers=workers, address=scheduler, copy_into=str(copy_into) if copy_into else None, link=link,
            chunk_size=options.chunk_size, max_pixels=options.max_pixels, engine=options.engine,
            precision=options.precision, follow_file_links=options.follow_file_links,
            min_files_per_worker=min_files_per_worker)
    # one process, decoding on every core: no Prefect server or Dask cluster to start
    from tasks.predict import classify
    from tasks.predict import copy_into as copying

    summary = classify.run(source, out, Path(model), options).as_dict()
    if copy_into:
        summary["copy_into"] = copying.copy_into(out, source, copy_into, link).as_dict()
    return summary
