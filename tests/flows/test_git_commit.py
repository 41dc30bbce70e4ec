"""Committing what DVC records of a run: dvc.lock, the .dvc files and DVC's .gitignore files, and nothing else."""

import subprocess
from pathlib import Path

import pytest

from flows import git_commit

IDENTITY = ["-c", "user.name=test", "-c", "user.email=test@example.com"]


def _git(repo: Path, *arguments: str) -> str:
    return subprocess.run(["git", *IDENTITY, *arguments], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path, monkeypatch) -> Path:
    for name, value in (("GIT_AUTHOR_NAME", "test"), ("GIT_AUTHOR_EMAIL", "t@example.com"),
                        ("GIT_COMMITTER_NAME", "test"), ("GIT_COMMITTER_EMAIL", "t@example.com")):
        monkeypatch.setenv(name, value)
    _git(tmp_path, "init", "--quiet")
    (tmp_path / "params.yaml").write_text("train: {epochs: 3}\n")
    _git(tmp_path, "add", "params.yaml")
    _git(tmp_path, "commit", "--quiet", "-m", "start")
    return tmp_path


def _a_run_wrote_its_records(repo: Path) -> None:
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages:\n  train:\n    outs:\n    - path: data/models/candidate\n"
                                   "      md5: abc.dir\n")
    (repo / "data/models").mkdir(parents=True)
    (repo / "data/models/.gitignore").write_text("/candidate\n/production\n")
    (repo / "data/models/production.dvc").write_text("outs:\n- md5: def.dir\n  path: production\n")


def test_only_the_dvc_records_are_committed_and_staged_work_stays_staged(repo):
    _a_run_wrote_its_records(repo)
    (repo / "notes.md").write_text("mine\n")
    _git(repo, "add", "notes.md")
    (repo / "params.yaml").write_text("train: {epochs: 5}\n")  # the run's params (`run -S train.epochs=5`)
    assert git_commit.is_repository(repo) and not git_commit.index_is_clean(repo)

    result = git_commit.commit(repo, "imgpipe run: Promoted 3f2a1b2c3d4e (macro-F1 0.9100)",
                               params_used=b"train: {epochs: 5}\n")
    assert result.committed, result.message
    committed = _git(repo, "show", "--name-only", "--format=", "HEAD").split()
    # the lock with the params it records: `dvc params diff HEAD~1 HEAD` shows the change
    assert committed == ["data/models/.gitignore", "data/models/production.dvc", "dvc.lock", "params.yaml"]
    assert _git(repo, "log", "-1", "--format=%s").strip() == "imgpipe run: Promoted 3f2a1b2c3d4e (macro-F1 0.9100)"
    assert _git(repo, "diff", "--cached", "--name-only").split() == ["notes.md"]
    assert _git(repo, "diff", "--name-only").split() == []

    again = git_commit.commit(repo, "imgpipe run: Unchanged")
    assert not again.committed and "nothing to commit" in again.message


def test_only_the_top_of_a_repository_counts(repo, tmp_path_factory):
    assert not git_commit.is_repository(tmp_path_factory.mktemp("not-a-repository"))
    (repo / "sub").mkdir()
    assert not git_commit.is_repository(repo / "sub")  # a project inside someone else's repository: not ours
    assert git_commit.index_is_clean(repo)


def test_params_changed_during_the_run_are_not_committed_with_its_lock(repo):
    _a_run_wrote_its_records(repo)
    (repo / "params.yaml").write_text("train: {epochs: 7}\n")  # edited by hand while a run of 5 epochs went on
    result = git_commit.commit(repo, "imgpipe run: Promoted", params_used=b"train: {epochs: 5}\n")
    assert not result.committed and "params.yaml changed while the run went on" in result.message
    assert _git(repo, "log", "--format=%s").split("\n")[0] == "start"  # nothing committed
    assert _git(repo, "diff", "--cached", "--name-only").split() == []  # nothing staged either
