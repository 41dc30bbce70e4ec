"""What `dvc exp show` prints, counted from the project as shipped without running anything (issue 25 item 4).

DVC (3.x) prints a column for every key of params.yaml (its default params file, read whole), for every file or
folder a stage depends on, and for every metric. No setting hides the dependency columns (each stage lists the
tasks/ modules it imports: tests/test_dvc_deps.py), so the short view is the README's
`dvc exp show --only-changed --keep 'test_|val_'`. What this file holds to:
- params.yaml holds only what stages read, and the few settings named here that no stage reads (the sweep's
  tune.* among them: a file of their own would be a new file at the project's top level, which is fixed);
- the metric names carry their split (test_*, train_*, val_*), so that the README's --keep pattern keeps exactly
  the headline metrics and none can be taken for a params key (`train.accuracy` read like one of `train:`).
"""

from __future__ import annotations

import re

import pytest

from tasks import metrics_file
from tests.conftest import PROJECT_ROOT

pytest.importorskip("dvc")
from dvc.dependency import ParamsDependency  # noqa: E402
from dvc.repo import Repo  # noqa: E402
from dvc.repo.params.show import _gather_params  # noqa: E402  (what `dvc exp show` collects)
from dvc.utils.flatten import flatten  # noqa: E402

# params.yaml keys that no stage lists and that DVC shows all the same (params.yaml is read whole):
# paths.*: dvc.yaml's ${paths...} templates (in any other vars file DVC would show them too, as tracked vars);
# evaluate.gate.*: the release gate, after the stages; preprocess.workers: how many processes, not what is made;
# tune.*: `imgpipe tune`'s sweep settings
NOT_STAGE_PARAMS = re.compile(r"paths\.\w+|evaluate\.gate\.\w+|preprocess\.workers|tune\.[\w.]+")
KEEP = "test_|val_"  # the README's `dvc exp show --only-changed --keep 'test_|val_'`
# the figures evaluate writes (tasks/scoring/metrics.py, multilabel.py) and Keras's logs of training (dvclive)
TEST_FIGURES = ["accuracy", "accuracy_ci", "macro_f1", "macro_f1_ci", "weighted_f1", "top_3_accuracy", "ece",
                "test_images", "bootstrap_samples", "micro_f1", "mean_average_precision", "task"]
KERAS_LOGS = ["loss", "accuracy", "macro_f1", "val_loss", "val_accuracy", "val_macro_f1", "learning_rate"]


@pytest.fixture(scope="module")
def shown() -> dict[str, set[str]]:
    """The params and dependency columns plain `dvc exp show` prints for the project, and the params stages read."""
    with Repo(str(PROJECT_ROOT)) as repo:
        def keys(deps_only: bool) -> set[str]:
            return {key for result in _gather_params(repo, deps_only=deps_only).values()
                    for key in flatten(result.get("data") or {})}

        deps = {str(dep.def_path) for dep in repo.index.deps if not isinstance(dep, ParamsDependency)}
        return {"params": keys(False), "stage_params": keys(True), "deps": deps}


def test_dvc_shows_no_params_key_that_no_stage_reads_but_those_named(shown):
    extra = sorted(shown["params"] - shown["stage_params"])
    assert all(NOT_STAGE_PARAMS.fullmatch(key) for key in extra), (
        f"params.yaml keys that no stage reads, each a column of every row of `dvc exp show`: "
        f"{[key for key in extra if not NOT_STAGE_PARAMS.fullmatch(key)]}; a setting of a command goes to a file "
        "of its own, a stage's setting into the stage's params in dvc.yaml")


def test_the_params_columns_stay_within_the_budget(shown):
    """The README's figures for plain `dvc exp show`: about 95 params columns, about 65 of them read by stages (the
    only ones `--param-deps` prints)."""
    assert len(shown["params"]) <= 100 and len(shown["stage_params"]) <= 70, (len(shown["params"]),
                                                                              len(shown["stage_params"]))


def test_every_metric_name_carries_its_split_and_the_readmes_keep_pattern_keeps_only_the_headline(shown):
    from tasks.train.callbacks import live_name

    test_names = [metrics_file.file_name(key) for key in TEST_FIGURES]
    live_names = [live_name(key) for key in KERAS_LOGS]
    assert all(name.startswith("test_") for name in test_names if name != "task")  # task: text, not a column
    assert all(name.startswith(("train_", "val_")) and "." not in name and "/" not in name for name in live_names)
    assert [metrics_file.plain_name(name) for name in test_names] == TEST_FIGURES
    keep = re.compile(KEEP)
    assert all(keep.match(name) for name in test_names if name != "task")
    assert {name for name in live_names if keep.match(name)} == {"val_loss", "val_accuracy", "val_macro_f1"}
    # nothing else is kept: no params key, no dependency, and no column that DVC would name after its file
    assert not [column for column in shown["params"] | shown["deps"] if keep.match(column)]
    # no metric has the name of a params key (DVC would then name both columns after their files)
    assert not (set(test_names) | set(live_names)) & shown["params"]


def test_the_readme_gives_the_short_view_and_says_what_plain_dvc_exp_show_prints():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert f"dvc exp show --only-changed --keep '{KEEP}'" in readme
    assert "the headline metrics only" not in readme
