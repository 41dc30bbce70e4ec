"""Promotion and rollback survive kill -9 at every step: a real subprocess is SIGKILLed, the next command finishes.

The subprocess dies at a named step (IMGPIPE_KILL_AT, tasks/kill_point.py), or at the worst moment of a
folder swap: after the old production folder was renamed away and before the new one was renamed into place
(os.replace patched in the subprocess), or in the middle of copying the candidate into the registry.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from flows.run_lock import workspace_lock
from tasks import export_folder, kill_point, model_folder, networks
from tasks.params import PathsParams
from tasks.paths import Paths
from tasks.release import promote
from tests.conftest import PROJECT_ROOT

CHILD = textwrap.dedent("""
    import os, shutil, signal, sys
    from pathlib import Path

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if os.environ.get("KILL_ON_RENAME_TO"):  # between the two renames of a folder swap
        real_replace = os.replace
        def replace(source, target):
            real_replace(source, target)
            if Path(target).name == os.environ["KILL_ON_RENAME_TO"]:
                die()
        os.replace = replace
    if os.environ.get("KILL_IN_COPY"):  # half-way through copying a model folder
        real_copytree, copied = shutil.copytree, []
        def copy(source, target, **options):
            copied.append(source)
            if len(copied) == 2:
                die()
            return shutil.copy2(source, target, **options)
        shutil.copytree = lambda source, target, **options: real_copytree(source, target, **options,
                                                                           copy_function=copy)

    from tasks.params import PathsParams
    from tasks.paths import Paths
    from tasks.release import promote

    paths = Paths(PathsParams(), Path(sys.argv[1]))
    if sys.argv[2] == "promote":
        promote.promote(paths, reason="forced in a crash test", force=True)
    else:
        promote.rollback(paths, reason="rolled back in a crash test")
""")


def _save_candidate(paths: Paths, seed: int) -> str:
    """A new candidate model folder (untrained weights, different per seed), as the train stage writes one, and its
    exports, as the export stage writes them."""
    import keras

    keras.utils.set_random_seed(seed)
    network = networks.simple_cnn(16, 3, depth=1, width=4, dropout=0.0)
    shutil.rmtree(paths.candidate, ignore_errors=True)
    paths.candidate.mkdir(parents=True)
    version = model_folder.write(paths.candidate, network, ["blue", "green", "red"],
                                 {"image_size": 16, "resize": "stretch"}, pd.DataFrame({"epoch": [0], "loss": [1.0]}))
    # its export folder as the export stage writes one (export.formats empty: engines.json alone)
    shutil.rmtree(paths.candidate_exports, ignore_errors=True)
    paths.candidate_exports.mkdir(parents=True)
    export_folder.write_engines(paths.candidate_exports, version, {"engines": [], "exports": []})
    return version


@pytest.fixture
def two_promoted(tmp_path) -> tuple[Paths, list[str]]:
    """A registry with two promoted versions (the second in production) and a third candidate waiting."""
    paths = Paths(PathsParams(), tmp_path)
    versions = []
    for seed in (1, 2):
        versions.append(_save_candidate(paths, seed))
        promote.promote(paths, reason="set-up", force=True)
    versions.append(_save_candidate(paths, 3))
    return paths, versions


def _killed(paths: Paths, action: str, **environment: str) -> None:
    child = subprocess.run([sys.executable, "-c", CHILD, str(paths.root), action], cwd=PROJECT_ROOT,
                           env=dict(os.environ, **environment), capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, f"not killed where expected:\n{child.stderr[-3000:]}"


def _production(paths: Paths) -> str | None:
    return json.loads((paths.production / "version.json").read_text())["version"] if paths.production.exists() \
        else None


def _consistent(paths: Paths, expected: str) -> None:
    """Production is whole, is the version the history names, and nothing half-written is left."""
    assert promote.current_version(paths) == expected == _production(paths)
    assert (paths.production / "model.keras").read_bytes() == (paths.registry / expected / "model.keras").read_bytes()
    leftovers = [item.name for folder in (paths.models, paths.registry) for item in folder.iterdir()
                 if item.name.startswith(".")]
    assert leftovers == [], leftovers
    promoted = {event["version"] for event in promote.read_history(paths) if event["action"] == "promote"}
    assert {item.name for item in paths.registry.iterdir() if item.is_dir()} == promoted  # no orphan versions


def test_rollback_killed_between_its_two_renames_is_finished_by_the_next_command(two_promoted):
    paths, (first, _, _) = two_promoted
    _killed(paths, "rollback", KILL_ON_RENAME_TO=".production.old")
    assert not paths.production.exists()  # the worst moment: the old folder moved away, the new one not in place
    assert promote.recover(paths)
    _consistent(paths, first)
    assert [event["action"] for event in promote.read_history(paths)] == ["promote", "promote", "rollback"]


def test_rollback_killed_after_its_history_write_is_finished_by_the_next_command(two_promoted):
    paths, (first, second, _) = two_promoted
    _killed(paths, "rollback", **{kill_point.VARIABLE: "rollback:committed"})
    assert promote.current_version(paths) == first and _production(paths) == second  # they disagree
    promote.recover(paths)
    _consistent(paths, first)


@pytest.mark.parametrize(("how", "committed"), [
    ({"KILL_IN_COPY": "1"}, False),                              # copying into the registry
    ({kill_point.VARIABLE: "promote:registered"}, False),        # copied, not yet recorded
    ({kill_point.VARIABLE: "promote:committed"}, True),          # recorded, production not yet replaced
    ({"KILL_ON_RENAME_TO": ".production.old"}, True),            # production moved away, the new one not in place
])
def test_a_killed_promotion_is_undone_or_finished_by_the_next_command(two_promoted, how, committed):
    paths, (_, second, third) = two_promoted
    _killed(paths, "promote", **how)
    promote.recover(paths)
    _consistent(paths, third if committed else second)
    if not committed:  # as if it had never started: it can be done again
        promote.promote(paths, reason="again", force=True)
        _consistent(paths, third)


def test_promote_and_rollback_take_the_run_lock(tmp_path):
    shutil.copy(PROJECT_ROOT / "params.yaml", tmp_path / "params.yaml")
    imgpipe = str(Path(sys.executable).parent / "imgpipe")
    with workspace_lock(tmp_path, timeout=0):
        for command in (["promote", "--force", "--reason", "test"], ["rollback"]):
            result = subprocess.run([imgpipe, *command, "--repo", str(tmp_path)], capture_output=True, text=True,
                                    timeout=300)
            assert result.returncode == 1 and "another imgpipe run is using" in result.stderr, result.stderr


def test_predict_serves_the_committed_model_after_a_rollback_killed_at_its_commit(two_promoted, tmp_path):
    """Issue 27 item 14: predict served the withdrawn model from the production folder until the next run."""
    from tasks.predict import classify
    from tests.conftest import write_class_folders

    paths, (first, second, _) = two_promoted
    _killed(paths, "rollback", **{kill_point.VARIABLE: "rollback:committed"})
    assert _production(paths) == second  # the folder as the killed rollback left it
    model = classify.default_model(paths)
    assert model == paths.registry / first
    source = write_class_folders(tmp_path / "photos", per_class=1)
    classify.run(source, tmp_path / "predictions.parquet", model, classify.PredictOptions(top_k=1))
    assert set(pd.read_parquet(tmp_path / "predictions.parquet")["model_version"]) == {first}
    promote.recover(paths)  # the next command finishes the rollback: the production folder again
    assert classify.default_model(paths) == paths.production and _production(paths) == first


def _registry_versions(paths: Paths) -> set[str]:
    return {item.name for item in paths.registry.iterdir() if item.is_dir() and not item.name.startswith(".")}


def test_without_its_history_a_rollback_deletes_no_registry_version(two_promoted):
    """Issue 27 item 12: with history.jsonl missing, a rollback deleted every registry version."""
    paths, (first, second, _) = two_promoted
    (paths.registry / "history.jsonl").unlink()
    with pytest.raises(ValueError, match="history.jsonl: missing, though .* holds model versions"):
        promote.rollback(paths, reason="test")
    assert _registry_versions(paths) == {first, second} and _production(paths) == second
    promote.recover(paths)
    assert _registry_versions(paths) == {first, second}
    from tasks.release import models

    entries, _ = models.list_models(paths)  # still listed, with why they are not in the history
    assert {entry.version for entry in entries} == {first, second}
    assert all("no record of it in history.jsonl" in entry.notes[0] for entry in entries)


def test_a_registry_version_that_registry_dvc_or_production_names_is_never_deleted(two_promoted):
    paths, (first, second, third) = two_promoted
    shutil.copytree(paths.candidate, paths.registry / third)  # as a promotion killed before its commit left it
    history = (paths.registry / "history.jsonl").read_text()
    (paths.registry / "history.jsonl").write_text(history.splitlines(keepends=True)[0])  # lost its last line
    listing = [{"md5": "0" * 32, "relpath": f"{version}/model.keras"} for version in (first, second, third)]
    cache = paths.root / ".dvc" / "cache" / "files" / "md5" / "ab"
    cache.mkdir(parents=True)
    (cache / ("c" * 30 + ".dir")).write_text(json.dumps(listing))
    (paths.registry.parent / "registry.dvc").write_text(f"outs:\n- md5: ab{'c' * 30}.dir\n  path: registry\n")
    promote.recover(paths)  # second: production holds it; third: registry.dvc names it
    assert _registry_versions(paths) == {first, second, third}
    (paths.registry.parent / "registry.dvc").unlink()
    promote.recover(paths)  # the candidate still holds third: its registry copy was only a leftover
    assert _registry_versions(paths) == {first, second}


def test_a_damaged_history_line_is_named_and_skipped_and_never_acted_on(two_promoted, caplog):
    """Issue 27 item 12: one corrupt line made every command fail without naming the file."""
    from tasks.release import models

    paths, (first, second, third) = two_promoted
    history_file = paths.registry / "history.jsonl"
    lines = history_file.read_text().splitlines(keepends=True)
    history_file.write_text(lines[0] + '{"action": "promote", "vers\n' + lines[1])
    assert [event["version"] for event in promote.read_history(paths)] == [first, second]
    assert f"{history_file} line 2: not a valid registry record (not JSON" in caplog.text
    assert '"vers' not in caplog.text  # the line is named, its content never echoed
    entries, _ = models.list_models(paths)
    assert [entry.version for entry in entries] == [first, second] and entries[1].production
    with pytest.raises(ValueError, match=f"{history_file}: cannot tell which model came before .* line 2: not JSON"):
        promote.rollback(paths, reason="test")
    assert _registry_versions(paths) == {first, second} and _production(paths) == second
    promote.promote(paths, reason="works around the damaged line", force=True)
    _consistent(paths, third)
    assert history_file.read_text().splitlines()[1] == '{"action": "promote", "vers'  # kept for a person to fix


def test_a_gate_that_judged_production_against_itself_is_not_taken_for_an_unfinished_promotion(tmp_path):
    """Issue 27 item 13: a candidate identical to production ends as 'Nothing to do'; the next command must not log
    that it finished an interrupted promotion of it (nor mark the gate 'promoted')."""
    paths = Paths(PathsParams(), tmp_path)
    version = _save_candidate(paths, 1)
    promote.promote(paths, reason="set-up", force=True)
    gate = {"decision": "pass", "candidate": {"version": version}, "champion": {"version": version}}
    paths.gate.parent.mkdir(parents=True, exist_ok=True)
    paths.gate.write_text(json.dumps(gate))
    assert promote.recover(paths) == []
    assert json.loads(paths.gate.read_text()) == gate
