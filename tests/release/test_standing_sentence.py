"""What a run that changed nothing says of the candidate (tasks/release/promote.standing_sentence)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.params import PathsParams
from tasks.paths import Paths
from tasks.release import promote


def test_a_production_candidate_is_said_to_be_production(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(promote, "candidate_is_production", lambda paths: True)
    monkeypatch.setattr(promote.model_folder, "version_of", lambda folder: "v-20261207-abc")
    paths = Paths(PathsParams(), tmp_path)
    sentence = promote.standing_sentence(paths, {"sentence": "The candidate passed all 3 checks and may be promoted."})
    assert sentence == ("Nothing changed since the last run: the candidate is the production model "
                        "(v-20261207-abc).")


def test_a_refused_candidate_keeps_the_gates_word(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(promote, "candidate_is_production", lambda paths: False)
    sentence = promote.standing_sentence(object(), {"sentence": "The candidate was refused: macro-F1 0.41 < 0.5."})
    assert sentence == "Nothing changed since the last run. The candidate was refused: macro-F1 0.41 < 0.5."
