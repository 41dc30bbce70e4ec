"""What a sweep asks of DVC: values DVC's own parser reads back, the pipeline as DVC resolves it, logs, errors."""

import os
import subprocess

import pytest
from dvc.utils.hydra import to_hydra_overrides

from tasks.tune import experiments
from tests.conftest import PROJECT_ROOT


@pytest.mark.parametrize("value", [0.001, 1e-05, 3, 0, -2, True, False, None, "cosine", "it's a \\ path",
                                   "ends in \\", "a\\'b", "42",
                                   "null", [16, "auto", None], {"epochs": 3, "unfreeze_layers": 20}])
def test_set_param_values_read_back_through_dvcs_own_parser(value):
    argument = experiments.set_param_arguments({"train.key": value}, {"train.key"})[1]
    override, = to_hydra_overrides([argument])
    assert override.key_or_group == "train.key"
    parsed = override.value()
    assert parsed == value and type(parsed) is type(value)


def test_a_key_params_yaml_leaves_to_its_default_is_added():
    arguments = experiments.set_param_arguments({"train.schedule": "constant", "train.epochs": 2}, {"train.epochs"})
    assert arguments == ["-S", "++train.schedule='constant'", "-S", "train.epochs=2"]
    override = to_hydra_overrides([arguments[1]])[0]
    assert override.is_force_add()


def test_values_dvc_cannot_take_are_refused():
    with pytest.raises(ValueError, match="cannot pass"):
        experiments.hydra_value(object())


def test_the_pipeline_as_dvc_resolves_it():
    pipeline = experiments.read_pipeline(PROJECT_ROOT)
    assert pipeline.upstream == ["demo", "ingest", "validate", "preprocess", "embed"]
    assert pipeline.uncached_outputs["ingest"] == []  # every output of the raw store's ingest is in DVC's cache
    assert "data/reports/evaluation/metrics.json" in pipeline.downstream_outputs
    # the candidate is train's (a trial builds it); its exports are the export stage's, after train (never built)
    assert not any(path == "data/models/candidate" or path.startswith("data/models/candidate/")
                   for path in pipeline.downstream_outputs)
    assert "data/models/candidate_exports" in pipeline.downstream_outputs
    stages = [*pipeline.upstream, "train"]
    assert experiments.stages_reading(pipeline, "train.learning_rate", stages) == ["train"]
    assert experiments.stages_reading(pipeline, "preprocess.augment.rotation", stages) == ["train"]
    assert experiments.stages_reading(pipeline, "preprocess.image_size", stages) == ["preprocess"]
    assert experiments.stages_reading(pipeline, "base.seed", stages) == ["preprocess", "train"]
    assert experiments.stages_reading(pipeline, "evaluate.top_k", stages) == []
    assert experiments.stages_reading(pipeline, "export.formats", stages) == []
    with pytest.raises(ValueError, match="no stage named nowhere"):
        experiments.read_pipeline(PROJECT_ROOT, "nowhere")


def test_the_stages_a_trial_ran_come_from_its_log():
    log = """Reproducing experiment 'tune-abc-01'
Stage 'demo' didn't change, skipping
Stage 'ingest' is cached - skipping run, checking out outputs
Running stage 'preprocess':
> python -m tasks.preprocess
Running stage 'train':
INFO tasks.train.callbacks: Running stage 'fake' inside a message is not a stage
"""
    assert experiments.stages_run(log) == ["preprocess", "train"]


def test_without_a_commit_the_error_says_what_to_do(tmp_path):
    subprocess.run(["git", "init", "--quiet"], cwd=tmp_path, check=True)
    with pytest.raises(ValueError, match="at least one commit.*git commit"):
        experiments.git_head(tmp_path)


def test_a_live_queue_worker_is_found_by_its_pid_file(tmp_path):
    folder = tmp_path / ".dvc/tmp/exps/celery"
    assert not experiments.workers_alive(tmp_path)
    folder.mkdir(parents=True)
    (folder / "dvc-exp-worker-1.pid").write_text("999999999\n")
    assert not experiments.workers_alive(tmp_path)
    (folder / "dvc-exp-worker-2.pid").write_text(f"{os.getpid()}\n")
    assert experiments.workers_alive(tmp_path)
