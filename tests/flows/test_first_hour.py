"""A new user's first hour, through the real commands (imgpipe, git, DVC) in a temporary copy of the repository:
runs that commit what DVC records, so that DVC's comparisons work; `-S`; the registry listing; a quiet log;
DVC's own commands from a shell without the virtual environment activated.

The tests of this module share one copy and run in order.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_class_folders
from tests.flows.test_end_to_end import NO_EXPORTS, _copy_repository, _environment_for, _git, _set_params

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
                "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}
IMGPIPE = str(Path(sys.executable).parent / "imgpipe")
DVC_FILES = ("dvc.lock", ".dvc", ".gitignore")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    repo = _copy_repository(tmp_path_factory.mktemp("first-hour"))
    source = write_class_folders(repo.parent / "source", per_class=12)  # the user's own images, not the demo
    # enough epochs and width to tell the three colours apart: the gate refuses a model naming one class for all
    _set_params(repo, {"ingest.source": str(source), "validate.min_images_per_class": 3, "preprocess.image_size": 16,
                       "preprocess.val_fraction": 0.25, "preprocess.test_fraction": 0.25, "train.epochs": 10,
                       "train.min_epochs": 1, "train.batch_size": 8, "train.width": 8, "train.depth": 2,
                       "evaluate.gate.min_accuracy": 0.0, "evaluate.gate.min_macro_f1": 0.0,
                       "evaluate.gate.tolerance": 1.0, "evaluate.gate.max_class_f1_drop": 1.0, **NO_EXPORTS})
    _git(repo, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "--quiet", "-am", "my data")
    return repo


def _imgpipe(repo: Path, *arguments: str) -> subprocess.CompletedProcess:
    environment = _environment_for(repo) | GIT_IDENTITY
    environment.pop("IMGPIPE_PROGRESS_SECONDS", None)
    return subprocess.run([IMGPIPE, *arguments, "--repo", str(repo)], env=environment, capture_output=True,
                          text=True, timeout=900)


def _dvc(repo: Path, *arguments: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dvc", *arguments], cwd=repo, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _files_of(repo: Path, revision: str) -> list[str]:
    return _git(repo, "show", "--name-only", "--format=", revision).split()


def test_runs_with_commit_make_dvc_comparisons_work(project, prefect_server):
    first = _imgpipe(project, "run", "--commit", "--no-push")
    assert first.returncode == 0, first.stderr[-3000:]
    message = _git(project, "log", "-1", "--format=%s").strip()
    assert message.startswith("imgpipe run: Promoted ") and "(macro-F1 " in message, message
    assert "git commit:" in first.stdout and message in first.stdout
    assert all(name.endswith(DVC_FILES) for name in _files_of(project, "HEAD")), _files_of(project, "HEAD")
    assert "dvc.lock" in _files_of(project, "HEAD") and "data/models/production.dvc" in _files_of(project, "HEAD")
    # the demo is not the source: its stage wrote a note, not 1,797 images
    assert [path.name for path in (project / "data/demo/digits").iterdir()] == ["NOT_USED.txt"]

    # the user's own staged work stays staged and out of imgpipe's commit
    (project / "NOTES.md").write_text("my notes\n")
    _git(project, "add", "NOTES.md")
    second = _imgpipe(project, "run", "--commit", "--no-push", "-S", "train.epochs=11")
    assert second.returncode == 0, second.stderr[-3000:]
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"] == 11  # kept, as dvc exp run -S
    assert "train.epochs: 10 -> 11" in second.stdout
    # the demo stage ran once, for the first run: with the user's own source it has nothing to do (issue 25 item 13)
    assert re.search(r"^  demo +skipped ", second.stdout, re.MULTILINE), second.stdout
    assert "demo data not written" not in second.stdout + second.stderr
    assert _git(project, "log", "-1", "--format=%s").startswith("imgpipe run: ")
    assert "NOTES.md" not in _files_of(project, "HEAD")
    assert _git(project, "diff", "--cached", "--name-only").split() == ["NOTES.md"]
    # the params the run used are committed with its lock: the commit agrees with itself, and DVC sees the change
    assert "params.yaml" in _files_of(project, "HEAD") and "params.yaml" not in _git(project, "status", "--short")
    changed = json.loads(_dvc(project, "params", "diff", "HEAD~1", "HEAD", "--json").stdout)
    assert {key: changed["params.yaml"]["train.epochs"][key] for key in ("old", "new")} == {"old": 10, "new": 11}

    # DVC's comparisons between the two revisions
    metrics = json.loads(_dvc(project, "metrics", "diff", "HEAD~1", "HEAD", "--all", "--json").stdout)
    headline = metrics["data/reports/evaluation/metrics.json"]
    assert "test_accuracy" in headline and "test_macro_f1" in headline
    assert not any(key.startswith("per_class") for key in headline)  # headline only; per-class beside it
    shown = json.loads(_dvc(project, "exp", "show", "--json").stdout)
    metric_columns = {f"{file}:{key}" for row in shown for file, found in ((row.get("data") or {}).get("metrics")
                                                                         or {}).items() for key in found["data"]}
    assert "data/reports/evaluation/metrics.json:test_macro_f1" in metric_columns
    assert not any("per_class" in column for column in metric_columns), metric_columns
    live = json.loads((project / "data/reports/training/live/metrics.json").read_text())
    card = json.loads((project / "data/models/candidate/model_card.json").read_text())
    assert live["val_accuracy"] == card["validation"]["val_accuracy"]  # the epoch kept
    assert live["kept_epoch"] == card["validation"]["epoch"]
    page = project.parent / "plots"
    _dvc(project, "plots", "diff", "HEAD~1", "HEAD", "-o", str(page))
    html = (page / "index.html").read_text()
    assert "Loss per epoch (train and validation)" in html and "Accuracy per epoch (train and validation)" in html
    pictures = {path.name for path in (page / "static").iterdir()}
    assert any("training_curves.png" in name for name in pictures), pictures  # drawn by imgpipe: shown offline
    assert any("confusion_matrix_normalised.png" in name for name in pictures), pictures
    _dvc(project, "plots", "show")  # writes dvc_plots/ in the project, which git ignores
    assert (project / "dvc_plots/index.html").is_file()
    assert "dvc_plots" not in _git(project, "status", "--porcelain", "--untracked-files=all")


def test_models_lists_the_registry_quickly(project, prefect_server):
    listing = _imgpipe(project, "models")
    assert listing.returncode == 0, listing.stderr
    production = (project / "data/models/production/version.json").read_text()
    version = json.loads(production)["version"]
    starred = [line for line in listing.stdout.splitlines() if line.startswith("  * ")]
    assert len(starred) == 1 and version in starred[0] and "pass" in starred[0], listing.stdout
    assert f"production: {version}" in listing.stdout


def _imported_by(repo: Path, *arguments: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run an imgpipe command under `python -X importtime`; the top-level packages it imported."""
    code = "import sys; from flows.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *arguments, "--repo", str(repo)],
                            env=_environment_for(repo) | GIT_IDENTITY, capture_output=True, text=True, timeout=300)
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    return result, imported


HEAVY = {"tensorflow", "keras", "sklearn", "pandas", "prefect", "dvc", "onnxruntime", "openvino"}


def test_models_promote_and_rollback_import_nothing_heavy_and_rollback_rewrites_the_report(project, prefect_server):
    listing, imported = _imported_by(project, "models")
    assert listing.returncode == 0 and not imported & HEAVY, imported & HEAVY
    rolled, imported = _imported_by(project, "rollback", "--reason", "worse on live traffic")
    assert rolled.returncode == 0, rolled.stderr[-3000:]
    assert not imported & HEAVY, imported & HEAVY  # `dvc add` runs as its own process
    page = (project / "data/reports/index.html").read_text()
    restored = json.loads((project / "data/models/production/version.json").read_text())["version"]
    assert f"<th>in production now</th><td>{restored}</td>" in page and "worse on live traffic" in page
    forced, imported = _imported_by(project, "promote", "--force", "--reason", "the newer one after all")
    assert forced.returncode == 0 and not imported & HEAVY, forced.stderr[-3000:]
    assert "promote (forced over the gate)" in (project / "data/reports/index.html").read_text()


def test_the_log_is_quiet_and_a_bad_param_is_one_line(project, prefect_server):
    run = _imgpipe(project, "run", "--no-push", "-S", "train.epochs=12")  # not trained before: no run-cache restore
    assert run.returncode == 0, run.stderr[-3000:]
    log = run.stderr
    (project.parent / "quiet-run.log").write_text(log)
    for noise in ("git add", "autostage", "Use `dvc push`", "cuInit", "Finished in state Completed()",
                  "INFO prefect", "INFO tasks."):
        assert noise not in log, f"{noise!r} in the log:\n{log[-4000:]}"
    assert "train epoch 1: " in log and "(epoch 1 of 12, " in log and "| train: " in log  # a stage's line, one prefix
    bad = _imgpipe(project, "run", "-S", "train.epochs=-1")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "train.epochs must be >= 1, got -1" in bad.stderr, bad.stderr
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"] == 12  # nothing written
    before = (project / "params.yaml").read_bytes()
    outside = _imgpipe(project, "run", "-S", "train.epochs=13", "-S", "paths.raw=/")  # refused before it is written
    assert outside.returncode == 1 and "paths.raw" in outside.stderr, outside.stderr
    assert (project / "params.yaml").read_bytes() == before


def test_dvc_commands_work_from_a_shell_without_the_venv_activated(project):
    """The README's `.venv/bin/dvc exp run -S ...`: the stages find the project's .venv through tasks/bin/python."""
    (project / ".venv").symlink_to(Path(sys.executable).parent.parent)
    shell = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), **GIT_IDENTITY,
             "TF_CPP_MIN_LOG_LEVEL": "2"}
    _git(project, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "--quiet", "-am", "params")
    experiment = subprocess.run([str(project / ".venv/bin/dvc"), "exp", "run", "-S", "train.epochs=1"], cwd=project,
                                env=shell, capture_output=True, text=True, timeout=900)
    assert experiment.returncode == 0, experiment.stdout[-3000:] + experiment.stderr[-3000:]
    assert "Running stage 'train'" in experiment.stdout
    # as DVC documents, the experiment's value stays in the workspace's params.yaml (the README says so)
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"] == 1
