"""The training flow: runs every dvc.yaml stage through DVC as one Prefect task each, publishes metrics, pushes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows import stage_runner
from tasks.config import load_config


@dataclass
class TrainingSummary:
    repo: str
    stages: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    pushed: bool = False


@task(retries=0)
def run_stage(root: Path, name: str) -> stage_runner.StageResult:
    logger = get_run_logger()
    result = stage_runner.repro_stage(root, name, logger.info)
    logger.info("stage %s %s in %.1f s", name, result.status, result.seconds)
    return result


@task(name="push", retries=2, retry_delay_seconds=5)
def push_outputs(root: Path) -> bool:
    logger = get_run_logger()
    if not stage_runner.has_remote(root):
        logger.warning("no DVC remote is configured; nothing pushed (dvc remote add -d NAME URL)")
        return False
    stage_runner.push(root, logger.info)
    return True


def _publish(metrics: dict[str, Any], validation_summary: Path) -> None:
    if metrics:
        headline = [{"metric": key, "value": round(value, 4)} for key, value in metrics.items()
                    if isinstance(value, float)]
        per_class = [{"class": label, **{key: round(value, 4) for key, value in scores.items()}}
                     for label, scores in metrics.get("per_class", {}).items()]
        create_table_artifact(key="test-metrics", table=headline, description="Candidate model on the test split")
        create_table_artifact(key="test-metrics-per-class", table=per_class, description="Per-class test metrics")
    if validation_summary.is_file():
        create_markdown_artifact(key="validation-summary", description="Data validation summary",
                                 markdown="```\n" + validation_summary.read_text(encoding="utf-8") + "\n```")


@flow(name="training", log_prints=True)
def training(repo: str = ".", push: bool = True) -> dict[str, Any]:
    """Run ingest, validate, preprocess, train and evaluate (as dvc.yaml orders them) and push the results."""
    root = Path(repo).resolve()
    _, paths = load_config(root / "params.yaml")
    summary = TrainingSummary(repo=str(root))
    for name in stage_runner.stage_names(root):
        result = run_stage.with_options(name=name)(root, name)
        summary.stages.append(asdict(result))
    metrics_file = paths.evaluation / "metrics.json"
    if metrics_file.is_file():
        summary.metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    _publish(summary.metrics, paths.validation / "summary.txt")
    summary.outputs = {
        "model": str(paths.candidate / "model.keras"),
        "metrics": str(metrics_file),
        "confusion matrix": str(paths.evaluation / "confusion_matrix.png"),
        "validation report": str(paths.validation / "data_docs" / "index.html"),
        "quarantine list": str(paths.quarantine),
    }
    if push:
        summary.pushed = push_outputs(root)
    return asdict(summary)
