"""The training flow: runs every dvc.yaml stage through DVC (one Prefect task each: demo, ingest, validate, preprocess,
embed, health, train, evaluate), gates, promotes, reports, pushes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import get_run_context
from prefect.states import Completed, Failed, State
from prefect.tasks import exponential_backoff

from flows import git_commit, journal, notify, run_lock, stage_runner, summaries
from tasks import kill_point, leftovers, model_folder
from tasks.config import load_config
from tasks.release import gate, promote, report, report_drift


@dataclass
class TrainingSummary:
    repo: str
    stages: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    outcome: str = ""  # Promoted, Refused or Unchanged
    outputs: dict[str, str] = field(default_factory=dict)
    pushed: bool = False
    recovered: list[str] = field(default_factory=list)  # what a killed run had left, cleared or finished
    committed: str = ""  # the git commit of dvc.lock and the .dvc files, or why none was made ("": not asked)


@task(retries=0)
def run_stage(root: Path, name: str, pipeline_unchanged: bool = False) -> stage_runner.StageResult:
    logger = get_run_logger()
    if pipeline_unchanged:  # `dvc status` found nothing to do: no need to ask DVC stage by stage
        logger.info("stage %s skipped: dvc status finds it up to date, and no stage before it changed anything", name)
        return stage_runner.StageResult(name, "skipped", 0.0)
    result = stage_runner.repro_stage(root, name, stage_runner.relay(logger))
    logger.info("stage %s %s in %.1f s", name, result.status, result.seconds)
    return result


@task(name="gate")
def judge_candidate(root: Path) -> tuple[dict[str, Any], bool]:
    """The gate's decision, and whether it was already taken for this candidate and this production model."""
    config, paths = load_config(root / "params.yaml")
    if gate.is_current(paths):
        get_run_logger().info("gate: this candidate was already judged against this production model")
        return json.loads(paths.gate.read_text(encoding="utf-8")), True
    return gate.run(config.evaluate.gate, config.base.seed, config.ingest.max_pixels, paths), False


@task(name="recover")
def finish_interrupted(root: Path) -> list[str]:
    """Clear what a killed run left: half-built output folders; an interrupted promotion or rollback is finished."""
    _, paths = load_config(root / "params.yaml")
    removed = leftovers.remove([paths.demo, paths.raw, paths.processed, paths.validation, paths.candidate,
                                paths.candidate_exports])
    return [f"removed {folder}" for folder in removed] + promote.recover(paths)


@task(name="promote")
def promote_candidate(root: Path) -> str | None:
    """Promote the candidate; return why not when an earlier rollback withdrew this very model."""
    _, paths = load_config(root / "params.yaml")
    try:
        promote.promote(paths, reason="passed the gate", requested_by=f"flow run {runtime.flow_run.id}")
    except promote.PromotionRefused as refusal:
        get_run_logger().warning("%s", refusal)
        return str(refusal)
    return None


@task(name="track")
def track_models(root: Path) -> None:
    """Version the production model and the registry with `dvc add` (commit the .dvc files)."""
    _, paths = load_config(root / "params.yaml")
    stage_runner.track(root, [folder for folder in (paths.production, paths.registry) if folder.exists()],
                       get_run_logger().info)


@task(name="report")
def write_report(root: Path) -> Path:
    _, paths = load_config(root / "params.yaml")
    page = report.run(paths, lineage={"prefect_flow_run_id": str(runtime.flow_run.id)})
    create_markdown_artifact(key="run-report", markdown=report.markdown_summary(paths),
                             description=f"Gate decision and test metrics; full report: {page}")
    return page


def _is_transient(task, task_run, state) -> bool:
    """Retry only what may work next time (a remote that did not answer), never a deterministic failure."""
    try:
        state.result()
    except (stage_runner.TransientError, OSError):
        return True
    except Exception:
        return False
    return False


@task(name="push", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2),
      retry_condition_fn=_is_transient)
def push_outputs(root: Path) -> bool:
    logger = get_run_logger()
    if not stage_runner.has_remote(root):
        logger.warning("no DVC remote is configured; nothing pushed (dvc remote add -d NAME URL)")
        return False
    stage_runner.push(root, logger.info)
    return True


def _publish(metrics: dict[str, Any], validation_summary: Path, drift: str | None) -> None:
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
    if drift:
        create_markdown_artifact(key="data-drift", markdown=drift,
                                 description="How far the images new since the last run sit from its images, per class")


def _release(root: Path, summary: TrainingSummary, already_judged: bool, interrupted: list[str]) -> str:
    """The promotion step: promote a candidate that passed and is not production yet; the run's outcome."""
    fresh = not already_judged or "promote" in interrupted  # a decision no earlier run finished acting on
    if summary.gate["decision"] == "pass" and summary.gate.get("promoted"):  # a killed run's, finished by recovery
        return "Promoted" if fresh else "Unchanged"
    _, paths = load_config(root / "params.yaml")
    if promote.candidate_is_production(paths):  # rebuilt as it was (params put back, say): nothing to promote
        return "Nothing to do"
    if summary.gate["decision"] != "pass":
        return "Refused" if fresh else "Unchanged"
    journal.owe(root, ["track"])  # before production or the registry change
    refusal = promote_candidate(root)
    if refusal:
        summary.gate["sentence"] = refusal
        return "Refused"
    return "Promoted"


def _commit_message(summary: TrainingSummary) -> str:
    """`imgpipe run: Promoted 3f2a1b2c3d4e (macro-F1 0.9100)`: the outcome, the candidate and its headline score."""
    candidate = summary.gate.get("candidate") or {}
    metric = summary.gate.get("headline_metric", "macro_f1")
    score = (candidate.get("metrics") or {}).get(metric, summary.metrics.get(metric))
    named = {"macro_f1": "macro-F1"}.get(metric, metric)
    details = f" ({named} {score:.4f})" if isinstance(score, float) else ""
    return f"imgpipe run: {summary.outcome} {candidate.get('version', '')}".rstrip() + details


@task(name="commit")
def commit_to_git(root: Path, message: str, wanted: bool | None, params_used: bytes | None = None) -> str:
    """Commit dvc.lock, the .dvc files and the params.yaml the run used (only those) with `message`; what was done,
    for the summary.

    wanted None (scheduled runs): commit when the folder is a git repository whose index is clean, so that a
    person's staged work is never mixed into a run's history.
    """
    logger = get_run_logger()
    if not git_commit.is_repository(root):
        if wanted:
            logger.warning("%s is not the top of a git repository: dvc.lock and the .dvc files not committed", root)
        return "not committed: not a git repository" if wanted else ""
    if wanted is None and not git_commit.index_is_clean(root):
        logger.info("not committing dvc.lock: the git index holds staged changes (`imgpipe run --commit` commits "
                    "dvc.lock and the .dvc files alone)")
        return "not committed: the git index holds staged changes"
    result = git_commit.commit(root, message, params_used)
    if result.committed:
        logger.info("committed %s to git as %s: %s", ", ".join(result.files), result.revision, message)
        return f"{result.revision} \"{message}\""
    (logger.warning if result.files else logger.info)("%s", result.message)
    return result.message


def _retrain(root: Path, push: bool, commit: bool | None = False) -> TrainingSummary:
    """The stages through DVC, then gate, promotion, tracking, report and push: the body of the training flow.

    What follows the stages is recorded in the journal (flows/journal.py) before it starts, so that a run killed
    at any point is finished by the next one.
    """
    params_used = (root / "params.yaml").read_bytes()  # what the stages read, committed with dvc.lock
    _, paths = load_config(root / "params.yaml")
    summary = TrainingSummary(repo=str(root))
    interrupted = journal.owed(root)
    summary.recovered = finish_interrupted(root)
    # One DVC call, not one per stage, for a run with nothing new: every stage but the always-changed ones (ingest,
    # whose own scan decides) is asked at once; each is then skipped without asking again while every stage before it
    # was skipped or wrote its outputs unchanged.
    names = stage_runner.stage_names(root)
    always = stage_runner.always_changed(root)
    others_unchanged = stage_runner.up_to_date(root, [name for name in names if name not in always])
    for name in names:
        nothing_changed = all(stage["status"] in ("skipped", "unchanged") for stage in summary.stages)
        skip = others_unchanged and nothing_changed and name not in always
        result = run_stage.with_options(name=name)(root, name, skip)
        summary.stages.append(asdict(result))
    summary.metrics = report.read_metrics(paths) or {}
    summary.outputs = {
        "model": str(paths.candidate / model_folder.MODEL_FILE),
        "exports": str(paths.candidate_exports),
        "production model": str(paths.production),
        "metrics": str(paths.evaluation / "metrics.json"),
        "gate decision": str(paths.gate),
        "run report": str(paths.reports / "index.html"),
        "validation report": str(paths.validation / "data_docs" / "index.html"),
        "quarantine list": str(paths.quarantine),
        "data health": str(paths.data_health / "label_issues.csv"),
    }
    nothing_ran = all(stage["status"] in ("skipped", "unchanged") for stage in summary.stages)
    if not (nothing_ran and gate.is_current(paths)):  # something new to release: owe it before doing any of it
        journal.owe(root, ["promote", *(["push"] if push else []), *(["commit"] if commit is not False else [])])
    asked = {"push": push, "commit": commit is not False}
    owed = [step for step in journal.owed(root) if asked.get(step, True)]
    summary.recovered += [f"the {step} step" for step in interrupted if step in owed]
    summary.gate, already_judged = judge_candidate(root)
    if not owed:  # no data, code or params changed, nothing left unfinished: leave every output as it is
        summary.outcome = "Nothing to do"
        summary.gate = {**summary.gate, "sentence": promote.standing_sentence(paths, summary.gate)}
        return summary
    kill_point.reached("release:judged")
    summary.outcome = "Unchanged"
    if "promote" in owed:
        summary.outcome = _release(root, summary, already_judged, interrupted)
        journal.done(root, "promote")
    if "track" in journal.owed(root):
        track_models(root)
        journal.done(root, "track")
    _publish(summary.metrics, paths.validation / "summary.txt", report_drift.markdown(paths))
    write_report(root)
    if "push" in owed:
        summary.pushed = push_outputs(root)
        journal.done(root, "push")
    if "commit" in owed:
        summary.committed = commit_to_git(root, _commit_message(summary), commit, params_used)
        journal.done(root, "commit")
    return summary


def _change_line(summary: TrainingSummary) -> str:
    candidate = summary.gate.get("candidate", {}).get("metrics", {})
    champion = (summary.gate.get("champion") or {}).get("metrics") or {}
    metric = summary.gate.get("headline_metric", "macro_f1")
    label_sets = summary.gate.get("label_sets") or {}
    if label_sets and not label_sets["same"]:
        return (f"label set changed ({len(label_sets['production'])} labels in production, "
                f"{len(label_sets['candidate'])} in the candidate); {metric} of the candidate {candidate[metric]:.4f}")
    if champion:
        return f"{metric}: production {champion[metric]:.4f} -> candidate {candidate[metric]:.4f}"
    return f"{metric}: candidate {candidate.get(metric, float('nan')):.4f} (no production model before)"


@flow(name="training", log_prints=True)
def training(repo: str = ".", push: bool = True, lock_timeout: float = 0.0, commit: bool | None = False) -> State:
    """Retrain when data, code or params changed: stages through DVC, gate against production, promote, report, push.

    commit: True commits dvc.lock and the .dvc files to git after a run that changed them (only those files);
    None does so when the folder is a git repository with nothing staged (the default of scheduled runs).
    The run uses params.yaml as it stands: the flow takes no params, so that a run created over Prefect's API
    cannot change them (the owner changes them through git, or `imgpipe run -S`, which writes them first).

    Ends in a named state: Promoted, Refused, Unchanged, Nothing to do, Skipped (another run holds the
    repository), or the failed state Invalid data. Nothing is retried except pushes to the DVC remote.
    """
    root = Path(repo).resolve()
    try:
        with run_lock.workspace_lock(root, lock_timeout):
            summary = _retrain(root, push, commit)
    except run_lock.WorkspaceBusy as busy:
        get_run_logger().warning("%s", busy)
        return Completed(name="Skipped", message=str(busy), data={"repo": str(root), "outcome": "Skipped"})
    except stage_runner.DataInvalid as invalid:
        notify.send("imgpipe: data validation failed", f"{root}: {invalid}")
        return Failed(name="Invalid data", message=str(invalid))
    except Exception as error:
        notify.send("imgpipe: training run failed", f"{root}: {type(error).__name__}: {error}")
        raise
    if summary.outcome in ("Promoted", "Refused"):
        notify.send(f"imgpipe: candidate {summary.outcome.lower()}",
                    f"{root}: {_change_line(summary)}. {summary.gate['sentence']}")
    if get_run_context().flow_run.deployment_id:  # a served run: no command prints its summary, so its log ends with it
        get_run_logger().info("%s", summaries.format_summary(asdict(summary)).strip("\n"))
    return Completed(name=summary.outcome, message=summary.gate["sentence"], data=asdict(summary))
