"""Stage errors through the real DVC command line: a refusal DVC gives no message for still gets its reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flows import stage_runner


def _dvc_project(root: Path, raw: str) -> Path:
    """A git + DVC project with one stage whose output is `paths.raw` from params.yaml."""
    subprocess.run(["git", "init", "--quiet"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--quiet"], cwd=root, check=True)
    (root / "params.yaml").write_text(f"paths:\n  raw: {raw}\n")
    (root / "dvc.yaml").write_text("stages:\n  ingest:\n    cmd: python -c 'print(1)'\n    outs:\n"
                                   "      - ${paths.raw}\n")
    return root


def test_an_output_dvc_refuses_without_a_message_gets_its_reason(tmp_path):
    root = _dvc_project(tmp_path, ".")
    with pytest.raises(stage_runner.StageFailed) as failed:
        stage_runner.repro_stage(root, "ingest", lambda line: None)
    message = str(failed.value)
    assert message.startswith("stage 'ingest' failed: failed to reproduce 'ingest': DVC refused it")
    assert "assert self.is_in_repo" in message and "not a path inside the project" in message
    assert "paths section of params.yaml" in message


def test_an_output_dvc_refuses_with_a_message_keeps_it(tmp_path):
    root = _dvc_project(tmp_path, ".git/raw")
    with pytest.raises(stage_runner.StageFailed, match=r"is ignored by"):
        stage_runner.repro_stage(root, "ingest", lambda line: None)
