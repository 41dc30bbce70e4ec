"""The training flow publishes the health stage's drift (tasks/release/report_drift.py's markdown) as a Prefect
artifact, and nothing when the stage wrote no drift.json; artifacts are caught here, no Prefect server is needed."""

from pathlib import Path

from flows import training


def test_the_drift_is_a_markdown_artifact_of_the_run(monkeypatch, tmp_path: Path):
    made: list[dict] = []
    monkeypatch.setattr(training, "create_markdown_artifact", lambda **artifact: made.append(artifact))
    training._publish({}, tmp_path / "no-validation-summary.txt", "## Data drift\n")
    assert [(artifact["key"], artifact["markdown"]) for artifact in made] == [("data-drift", "## Data drift\n")]
    made.clear()
    training._publish({}, tmp_path / "no-validation-summary.txt", None)
    assert made == []
