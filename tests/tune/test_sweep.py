"""The sweep's steps against a scripted stand-in for DVC: resume after a kill at any step, early stops, the budget.

The real DVC runs in tests/flows/test_tune.py; here its experiment commands are replaced by a small simulation,
so that every interleaving of a kill, a stalled queue worker or a spent budget can be set up exactly.
"""

import json
from pathlib import Path

import pytest
import yaml

from tasks.tune import experiments, sweep
from tests.conftest import PROJECT_ROOT

PIPELINE = experiments.Pipeline(
    upstream=["demo", "ingest", "validate", "preprocess"],
    stage_params={"demo": [], "ingest": ["ingest"], "validate": ["validate"],
                  "preprocess": ["base.seed", "preprocess.image_size"], "train": ["base.seed", "preprocess.augment",
                                                                                   "train"], "evaluate": ["evaluate"]},
    uncached_outputs={"demo": [], "ingest": ["data/interim/ingest_cache.parquet"], "validate": [], "preprocess": [],
                      "train": [], "evaluate": []},
    downstream_outputs=["data/reports/evaluation/metrics.json"])


class FakeDvc:
    """DVC's queue as a script: each trial is queued, then runs for `running_polls` polls, then ends as scripted."""

    def __init__(self, root: Path, running_polls: int = 1) -> None:
        self.root = root
        self.running_polls = running_polls
        self.queued: list[str] = []
        self.entries: dict[str, dict] = {}
        self.calls: list[tuple] = []
        self.outcomes: dict[str, str] = {}  # name -> "success" (default) or "failed"
        self.histories: dict[str, list[float]] = {}  # name -> val_accuracy per epoch
        self.logs: dict[str, str] = {}  # name -> its queue log
        self.workers_run = True
        self.fail_queue_at: int | None = None

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(experiments, "git_head", lambda root: "b" * 40)
        monkeypatch.setattr(experiments, "read_pipeline", lambda root, target="train": PIPELINE)
        monkeypatch.setattr(experiments, "include_lock_file", lambda root: False)
        monkeypatch.setattr(experiments, "queue", self.queue)
        monkeypatch.setattr(experiments, "start_workers",
                            lambda root, jobs, threads: self.calls.append(("start", jobs)))
        monkeypatch.setattr(experiments, "workers_alive", lambda root: self.workers_run)
        monkeypatch.setattr(experiments, "experiments", self.experiments)
        monkeypatch.setattr(experiments, "kill", lambda root, names: self.end(names, "failed", "kill"))
        monkeypatch.setattr(experiments, "remove_queued", lambda root, names: self.end(names, None, "remove"))
        monkeypatch.setattr(experiments, "read_output", self.read_output)
        monkeypatch.setattr(experiments, "apply", self.apply)

    def queue(self, root, name, set_params, target, single_item, copy_paths) -> None:
        if self.fail_queue_at is not None and len(self.queued) == self.fail_queue_at:
            raise KeyboardInterrupt  # the command was killed while queueing
        self.queued.append(name)
        self.calls.append(("queue", name, tuple(set_params), single_item, tuple(copy_paths)))
        params = {}
        for argument in set_params[1::2]:
            key, _, value = argument.lstrip("+").partition("=")
            params[key] = yaml.safe_load(value)
        self.entries[name] = {"state": "queued", "polls": 0, "params": params}

    def end(self, names, final, call) -> None:
        self.calls.append((call, *names))
        for name in names:
            if final is None:
                self.entries.pop(name, None)
            else:
                self.entries[name]["state"] = final

    def experiments(self, root, baseline):
        found = {}
        running = [name for name, entry in self.entries.items() if entry["state"] == "running"]
        for name, entry in self.entries.items():
            if entry["state"] == "queued" and not running and self.workers_run:
                entry["state"], running = "running", [name]
            elif entry["state"] == "running":
                entry["polls"] += 1
                if entry["polls"] > self.running_polls:
                    entry["state"] = self.outcomes.get(name, "success")
            nested = {}
            for key, value in entry["params"].items():
                node = nested
                *parents, leaf = key.split(".")
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = value
            workdir = str(self.root / "exps" / name) if entry["state"] == "running" else None
            log = self.root / "logs" / f"{name}.out"
            log.parent.mkdir(exist_ok=True)
            log.write_text(self.logs.get(name, "Stage 'preprocess' didn't change, skipping\nRunning stage 'train':\n"))
            found[name] = experiments.Experiment(name, entry["state"], f"rev-{name}", nested, str(log), workdir)
        return found

    def read_output(self, root, path, rev):
        name = rev.removeprefix("rev-")
        accuracies = self.histories.get(name, [0.5, 0.7])
        if path.endswith("model_card.json"):
            best = max(range(len(accuracies)), key=lambda index: accuracies[index])
            return json.dumps({"validation": {"val_loss": 1 - accuracies[best], "val_accuracy": accuracies[best],
                                              "epoch": best + 1, "phase": "train"},
                               "epochs_run": len(accuracies), "train_seconds": 3.0})
        rows = "".join(f"{epoch},{1 - value},{value},train\n" for epoch, value in enumerate(accuracies))
        return "epoch,val_loss,val_accuracy,phase\n" + rows

    def apply(self, root, name, pipeline) -> None:
        self.calls.append(("apply", name))
        values = yaml.safe_load((root / "params.yaml").read_text())
        for key, value in self.entries[name]["params"].items():
            section, leaf = key.split(".")
            values[section][leaf] = value
        (root / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A project folder with the real params.yaml, a 3-trial grid of learning rates, and the DVC stand-in."""
    values = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    values["tune"].update(method="grid", space={"train.learning_rate": [0.001, 0.002, 0.004]})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    monkeypatch.setattr(sweep, "POLL_SECONDS", 0.0)
    return tmp_path


def _set_tune(root: Path, **settings) -> None:
    values = yaml.safe_load((root / "params.yaml").read_text())
    values["tune"].update(settings)
    (root / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))


def _removed(dvc: FakeDvc) -> list[str]:
    return [name for call in dvc.calls if call[0] == "remove" for name in call[1:]]


def _statuses(root: Path) -> list[str]:
    return [trial.status for trial in sweep.load(root)[2].trials]


def test_a_sweep_runs_its_trials_and_ranks_them(project, monkeypatch):
    dvc = FakeDvc(project)
    dvc.install(monkeypatch)
    dvc.histories = {"tune-{}-01": [0.3, 0.5], "tune-{}-02": [0.4, 0.9], "tune-{}-03": [0.6, 0.8]}
    planned = sweep.plan(project)
    dvc.histories = {key.format(planned.sweep_id[:6]): value for key, value in dvc.histories.items()}
    assert planned.upstream == PIPELINE.upstream and planned.single_item and planned.copy_paths == []
    assert sweep.queue_trials(project) == 3
    assert [call[2] for call in dvc.calls if call[0] == "queue"] == [
        ("-S", f"train.learning_rate={rate}") for rate in (0.001, 0.002, 0.004)]
    finished = sweep.follow(project, jobs=1, poll_seconds=0)
    assert [trial.status for trial in finished.trials] == ["done"] * 3
    assert finished.trials[1].val_accuracy == 0.9 and finished.trials[1].epoch == 2
    assert finished.trials[1].history["val_accuracy"] == [0.4, 0.9]
    summary = sweep.report(project)
    assert summary["best"]["trial"] == finished.trials[1].name
    assert summary["best"]["params"] == {"train.learning_rate": 0.002}
    assert (project / "data/reports/tuning/trials.parquet").is_file()
    assert (project / "data/reports/tuning/objective.png").is_file()
    applied = sweep.apply_best(project)
    assert applied["trial"] == finished.trials[1].name
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["learning_rate"] == 0.002


def test_a_sweep_killed_while_queueing_queues_only_the_rest(project, monkeypatch):
    dvc = FakeDvc(project)
    dvc.install(monkeypatch)
    dvc.fail_queue_at = 1
    sweep.plan(project)
    with pytest.raises(KeyboardInterrupt):
        sweep.queue_trials(project)
    assert _statuses(project) == ["queued", "planned", "planned"]
    dvc.fail_queue_at = None
    resumed = sweep.plan(project)  # the same settings: the same sweep
    assert [trial.status for trial in resumed.trials] == ["queued", "planned", "planned"]
    assert sweep.queue_trials(project) == 2
    assert dvc.queued == [trial.name for trial in resumed.trials]  # each queued once
    assert [trial.status for trial in sweep.follow(project, 1, poll_seconds=0).trials] == ["done"] * 3


def test_a_sweep_killed_while_following_keeps_finished_trials(project, monkeypatch):
    dvc = FakeDvc(project, running_polls=2)
    dvc.install(monkeypatch)
    sweep.plan(project)
    sweep.queue_trials(project)
    seen = []

    def kill_after_first(current):
        seen.append([trial.status for trial in current.trials])
        if current.trials[0].status == "done":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep.follow(project, 1, poll_seconds=0, progress=kill_after_first)
    assert _statuses(project)[0] == "done"
    first = sweep.load(project)[2].trials[0]
    sweep.plan(project)
    assert sweep.queue_trials(project) == 0  # DVC holds the others
    finished = sweep.follow(project, 1, poll_seconds=0)
    assert [trial.status for trial in finished.trials] == ["done"] * 3
    assert finished.trials[0] == first
    assert dvc.queued == [trial.name for trial in finished.trials]


def test_changed_settings_plan_a_new_sweep_and_unqueue_the_old_one(project, monkeypatch):
    dvc = FakeDvc(project)
    dvc.install(monkeypatch)
    first = sweep.plan(project)
    sweep.queue_trials(project)
    _set_tune(project, space={"train.learning_rate": [0.01, 0.02]})
    second = sweep.plan(project)
    assert second.sweep_id != first.sweep_id and len(second.trials) == 2
    assert _removed(dvc) == [trial.name for trial in first.trials]
    assert sweep.plan(project).sweep_id == second.sweep_id
    _set_tune(project, max_minutes=30, objective="val_loss", prune={"after_epoch": 2, "min_trials": 2})
    assert sweep.plan(project).sweep_id == second.sweep_id  # budget, objective and early stop may change
    values = yaml.safe_load((project / "params.yaml").read_text())
    values["train"]["learning_rate"] = 0.02  # as `imgpipe tune --apply` leaves it: still the same sweep
    (project / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    assert sweep.plan(project).sweep_id == second.sweep_id
    values["train"]["epochs"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    third = sweep.plan(project)
    assert third.sweep_id != second.sweep_id
    assert sweep.plan(project, restart=True).sweep_id != third.sweep_id


def test_sweeping_a_key_of_an_earlier_stage_runs_that_stage_too(project, monkeypatch):
    FakeDvc(project).install(monkeypatch)
    _set_tune(project, space={"preprocess.image_size": [16, 24]})
    planned = sweep.plan(project)
    assert not planned.single_item and planned.copy_paths == ["data/interim/ingest_cache.parquet"]
    _set_tune(project, space={"evaluate.top_k": [1, 2]})
    with pytest.raises(ValueError, match=r"^tune.space.evaluate.top_k: no stage up to train reads evaluate.top_k"):
        sweep.plan(project)


def test_failed_trials_are_listed_with_their_error(project, monkeypatch):
    dvc = FakeDvc(project)
    dvc.install(monkeypatch)
    planned = sweep.plan(project)
    dvc.outcomes[planned.trials[1].name] = "failed"
    dvc.logs[planned.trials[1].name] = ("Running stage 'train':\nValueError: train.batch_size is too large\n"
                                        "ERROR: failed")
    sweep.queue_trials(project)
    finished = sweep.follow(project, 1, poll_seconds=0)
    assert [trial.status for trial in finished.trials] == ["done", "failed", "done"]
    assert "ValueError: train.batch_size is too large" in finished.trials[1].note
    assert finished.trials[0].stages_run == ["train"]


def test_hopeless_trials_are_stopped_by_the_median_rule(project, monkeypatch):
    dvc = FakeDvc(project, running_polls=3)
    dvc.install(monkeypatch)
    _set_tune(project, space={"train.learning_rate": [0.001, 0.002, 0.003, 0.004]},
              prune={"after_epoch": 1, "min_trials": 3})
    planned = sweep.plan(project)
    names = [trial.name for trial in planned.trials]
    dvc.histories = {names[0]: [0.6, 0.7], names[1]: [0.5, 0.8], names[2]: [0.7, 0.75]}
    live = project / "exps" / names[3] / "data/reports/training/live/plots/metrics"
    live.mkdir(parents=True)
    (live / "val_accuracy.tsv").write_text("step\tval_accuracy\n0\t0.2\n")
    sweep.queue_trials(project)
    finished = sweep.follow(project, 1, poll_seconds=0)
    assert [trial.status for trial in finished.trials] == ["done", "done", "done", "stopped"]
    assert finished.trials[3].note.startswith("stopped after epoch 1: val_accuracy 0.2 was worse than the median 0.6")
    assert ("kill", names[3]) in dvc.calls
    assert sweep.report(project)["best"]["trial"] == names[1]


def test_the_time_budget_leaves_unstarted_trials_out(project, monkeypatch):
    dvc = FakeDvc(project, running_polls=3)
    dvc.install(monkeypatch)
    _set_tune(project, max_minutes=1e-9)
    sweep.plan(project)
    sweep.queue_trials(project)
    finished = sweep.follow(project, 1, poll_seconds=0)
    assert [trial.status for trial in finished.trials] == ["done", "skipped", "skipped"]  # the running one finished
    assert "tune.max_minutes" in finished.trials[1].note
    assert _removed(dvc) == [trial.name for trial in finished.trials[1:]]


def test_a_stalled_queue_gets_its_workers_started_again(project, monkeypatch):
    dvc = FakeDvc(project)
    dvc.install(monkeypatch)
    dvc.workers_run = False  # dvc#10562: the worker left with trials still queued
    sweep.plan(project)
    sweep.queue_trials(project)

    def start_workers(root, jobs, threads):
        dvc.calls.append(("start", jobs))
        dvc.workers_run = [call[0] for call in dvc.calls].count("start") > 1  # the second start works

    monkeypatch.setattr(experiments, "start_workers", start_workers)
    finished = sweep.follow(project, 2, poll_seconds=0)
    assert [trial.status for trial in finished.trials] == ["done"] * 3
    assert [call for call in dvc.calls if call[0] == "start"] == [("start", 2), ("start", 2)]


def test_nothing_to_apply_is_an_error(project, monkeypatch):
    dvc = FakeDvc(project)
    dvc.install(monkeypatch)
    planned = sweep.plan(project)
    for trial in planned.trials:
        dvc.outcomes[trial.name] = "failed"
        dvc.logs[trial.name] = "ERROR: out of memory"
    sweep.queue_trials(project)
    sweep.follow(project, 1, poll_seconds=0)
    with pytest.raises(RuntimeError, match="no trial of sweep .* has finished"):
        sweep.apply_best(project)
    with pytest.raises(Exception, match="jobs"):
        sweep.follow(project, 0)


def test_a_trial_whose_results_cannot_be_read_fails_alone(project, monkeypatch):
    dvc = FakeDvc(project)
    dvc.install(monkeypatch)
    planned = sweep.plan(project)
    broken = planned.trials[0].name
    read_output = dvc.read_output

    def read(root, path, rev):
        if rev == f"rev-{broken}":
            raise FileNotFoundError(f"{path}: not in the cache")
        return read_output(root, path, rev)

    monkeypatch.setattr(experiments, "read_output", read)
    sweep.queue_trials(project)
    finished = sweep.follow(project, 1, poll_seconds=0)
    assert [trial.status for trial in finished.trials] == ["failed", "done", "done"]
    assert "results could not be read: FileNotFoundError" in finished.trials[0].note
