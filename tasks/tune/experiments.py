"""DVC's experiment machinery for a sweep: queue trials, start workers, read their state, kill, apply; via DVC.

Every trial is an ordinary DVC experiment (`dvc exp run --queue -n NAME -S key=value TARGET`), run by DVC's
queue workers (`dvc queue start -j N`) in a folder of its own under .dvc/tmp/exps/, and followed with
`dvc exp show --json`, which gives each experiment's state, commit, log file and (while running) folder.
Reads dvc.yaml, params.yaml and the DVC cache; writes only what these DVC commands write.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dvc.api

from tasks import dvc_command

TARGET_STAGE = "train"  # a trial ends here: its objective is a validation metric, so it never reads the test split
LOCK_FILE = "dvc.lock"
_RAN = re.compile(r"^Running stage '(?P<name>[^']+)'", re.MULTILINE)
_CHECKOUT_FAILED = "Checkout failed for following targets:"
_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception|Interrupt)\w*: ")
_DVC_ERROR = re.compile(r"^ERROR: ")
_ESCAPES = re.compile(r"(\\*)('|$)")


@dataclass(frozen=True)
class Pipeline:
    """What a sweep needs to know of dvc.yaml about the stages up to its target."""

    upstream: list[str]  # the stages the target depends on, in dvc.yaml order
    stage_params: dict[str, list[str]]  # stage -> the params keys or sections it declares
    uncached_outputs: dict[str, list[str]]  # stage -> outputs DVC does not cache (persistent state, say)
    downstream_outputs: list[str]  # outputs of the stages after the target (a trial never builds them)


@dataclass(frozen=True)
class Experiment:
    """One experiment as `dvc exp show --json` describes it."""

    name: str
    state: str  # queued, running, success or failed
    rev: str  # the experiment's commit when it succeeded, else its queue entry
    params: dict[str, Any]
    log: str | None  # the queue worker's log of its run
    workdir: str | None  # its folder while it runs


# DVC runs through tasks/dvc_command.py, as the flows run it
run_dvc = dvc_command.run
error_lines = dvc_command.error_lines


def git_head(root: Path) -> str:
    """The commit experiments derive from; DVC needs one, so its absence is an error saying what to do."""
    completed = subprocess.run(["git", "rev-parse", "--verify", "--quiet", "HEAD"], cwd=root, capture_output=True,
                               text=True, check=False)
    if completed.returncode != 0:
        raise ValueError(f"{root}: DVC experiments need a git repository with at least one commit; run "
                         "`git init` (if needed), `git add -A` and `git commit -m start` first")
    return completed.stdout.strip()


def read_pipeline(root: Path, target: str = TARGET_STAGE) -> Pipeline:
    """The stages up to `target` as DVC resolves dvc.yaml (templating included)."""
    import networkx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        # the stages of the project's dvc.yaml, by name (`addressing` would be relative to the current folder;
        # .dvc files, such as the production model's, are not stages of the pipeline)
        dvc_file = os.path.realpath(root / "dvc.yaml")
        stages = {stage.name: stage for stage in repo.index.stages
                  if getattr(stage, "name", None) and os.path.realpath(stage.dvcfile.path) == dvc_file}
        if target not in stages:
            raise ValueError(f"{dvc_file}: no stage named {target}; a sweep reproduces {target}")
        ancestors = networkx.descendants(repo.index.graph, stages[target])  # edges point at dependencies
        upstream = [name for name, stage in stages.items() if stage in ancestors]
        stage_params = {name: [key for param in stage.params for key in param.params]
                        for name, stage in stages.items()}
        uncached = {name: [str(output.def_path) for output in stage.outs if not output.use_cache]
                    for name, stage in stages.items()}
        downstream = [str(output.def_path) for name, stage in stages.items()
                      if name not in upstream and name != target for output in stage.outs]
    return Pipeline(upstream, stage_params, uncached, downstream)


def stages_reading(pipeline: Pipeline, key: str, stages: list[str]) -> list[str]:
    """Which of `stages` declare `key` among their params, themselves or through a section above it."""
    return [stage for stage in stages
            if any(key == declared or key.startswith(declared + ".") for declared in pipeline.stage_params[stage])]


def hydra_value(value: Any) -> str:
    """A value as DVC's `-S key=value` reads it (Hydra's override grammar): strings always quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):  # a backslash escapes only a quote or the backslashes just before one
        return "'" + _ESCAPES.sub(lambda match: match[1] * 2 + ("\\'" if match[2] else ""), value) + "'"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{hydra_value(item)}" for key, item in value.items()) + "}"
    raise ValueError(f"cannot pass {value!r} ({type(value).__name__}) to `dvc exp run -S`")


def set_param_arguments(params: dict[str, Any], keys_in_file: set[str]) -> list[str]:
    """`-S key=value` for each; `++key=value` adds a key that params.yaml leaves to its default."""
    arguments = []
    for key, value in params.items():
        arguments += ["-S", f"{'' if key in keys_in_file else '++'}{key}={hydra_value(value)}"]
    return arguments


def include_lock_file(root: Path) -> bool:
    """Stage an untracked dvc.lock in git: queued experiments take tracked files only, and without the lock a trial
    would not know that the stages before it are up to date (and would run them again). True when it staged it."""
    if not (root / LOCK_FILE).is_file():
        return False
    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--", LOCK_FILE], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    if not untracked:
        return False
    subprocess.run(["git", "add", "--", LOCK_FILE], cwd=root, check=True, capture_output=True)
    return True


def queue(root: Path, name: str, set_params: list[str], target: str, single_item: bool,
          copy_paths: list[str]) -> None:
    """Queue one trial: `dvc exp run --queue -n NAME -S ... TARGET` (with `-s` when it runs the target alone)."""
    arguments = ["exp", "run", "--queue", "--name", name, *set_params]
    if single_item:
        arguments.append("--single-item")
    for path in copy_paths:
        if (root / path).exists():
            arguments += ["--copy-paths", path]
    run_dvc(root, [*arguments, target])


def start_workers(root: Path, jobs: int, threads_per_job: int | None) -> None:
    """`dvc queue start -j JOBS`; each trial's TensorFlow limited to its share of the cores when jobs share them."""
    extra = {}
    if threads_per_job is not None:
        extra = {"TF_NUM_INTRAOP_THREADS": str(threads_per_job), "OMP_NUM_THREADS": str(threads_per_job)}
    run_dvc(root, ["queue", "start", "--jobs", str(jobs)], extra_environment=extra)


def workers_alive(root: Path) -> bool:
    """Whether a DVC queue worker process of this repository is running (from the pid files DVC keeps)."""
    for pid_file in (root / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.pid"):
        try:
            os.kill(int(pid_file.read_text().strip()), 0)
        except (ValueError, OSError):  # unreadable, or no such process
            continue
        return True
    return False


def experiments(root: Path, baseline: str) -> dict[str, Experiment]:
    """Every experiment derived from `baseline`, queued, running or finished, by name (`dvc exp show --json`)."""
    completed = run_dvc(root, ["exp", "show", "--json", "--rev", baseline, "--hide-workspace"])
    found: dict[str, Experiment] = {}
    for commit in json.loads(completed.stdout or "[]"):
        for entry in commit.get("experiments") or []:
            revision = (entry.get("revs") or [{}])[0]
            name = entry.get("name") or revision.get("name")
            if not name:
                continue
            executor = entry.get("executor") or {}
            local = executor.get("local") or {}
            data = revision.get("data") or {}
            params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
            found[name] = Experiment(name, executor.get("state") or "success", revision.get("rev", ""), params,
                                     local.get("log"), local.get("root"))
    return found


def kill(root: Path, names: list[str]) -> None:
    if names:
        run_dvc(root, ["queue", "kill", *names], check=False)


def remove_queued(root: Path, names: list[str]) -> None:
    """Take trials off the queue; one at a time, since DVC refuses the whole call when one has started."""
    for name in names:
        run_dvc(root, ["queue", "remove", name], check=False)


def read_output(root: Path, path: str, rev: str) -> str:
    """A file of a DVC-tracked output as an experiment's commit has it."""
    return dvc.api.read(path, repo=str(root), rev=rev, encoding="utf-8")


def stages_run(log_text: str) -> list[str]:
    """The stages a trial ran (rather than took from the workspace or DVC's cache), from its log."""
    return list(dict.fromkeys(match["name"] for match in _RAN.finditer(log_text)))


def failure_reason(log_text: str) -> str:
    """Why a trial failed, from its log: the stage's own exception line, else DVC's error, else the last line."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for pattern in (_EXCEPTION_LINE, _DVC_ERROR):
        found = [line for line in lines if pattern.match(line)]
        if found:
            return found[-1][:300]
    return lines[-1][:300] if lines else "failed, with nothing in its log"


def apply(root: Path, name: str, pipeline: Pipeline) -> None:
    """`dvc exp apply NAME`: its params and outputs into the workspace.

    DVC reports a failed checkout for the outputs of the stages after the target when they were never built
    (a fresh project): those the next `imgpipe run` builds, so that alone is not a failure.
    """
    completed = run_dvc(root, ["exp", "apply", name], check=False)
    if completed.returncode == 0:
        return
    text = completed.stderr + completed.stdout
    if _CHECKOUT_FAILED not in text:
        raise RuntimeError(f"dvc exp apply {name} failed: {error_lines(completed)}")
    listed = text.split(_CHECKOUT_FAILED, 1)[1].splitlines()
    missing = [line.strip() for line in listed if line.strip() and not line.startswith(("Is your cache", "<http"))]
    others = [path for path in missing if not any(path == output or path.startswith(output.rstrip("/") + "/")
                                                  for output in pipeline.downstream_outputs)]
    if others:
        raise RuntimeError(f"dvc exp apply {name}: these outputs could not be checked out: {', '.join(others)}; "
                           "is the DVC cache complete (dvc pull)?")
