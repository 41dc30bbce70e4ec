"""How predict spreads a folder over workers: every worker gets chunks; a small folder stays in one process."""

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd

from tasks.predict import sizing
from tests.conftest import write_class_folders
from tests.flows.test_prefect_setup import untrained_model_folder


def test_a_folder_too_small_for_a_cluster_stays_in_one_process():
    assert sizing.plan_for_workers(372, 2, 1024) == (False, 1024)  # issue 16: one chunk, one busy worker
    assert sizing.plan_for_workers(1999, 2, 1024)[0] is False
    assert sizing.plan_for_workers(372, 2, 1024, min_files_per_worker=0)[0] is True


def test_chunks_are_cut_so_that_every_worker_gets_several():
    for files, workers in ((2000, 2), (5000, 4), (40_000, 8), (9000, 3)):
        use_cluster, chunk_size = sizing.plan_for_workers(files, workers, 1024)
        assert use_cluster
        assert math.ceil(files / chunk_size) >= sizing.SHARDS_PER_WORKER * workers, (files, workers, chunk_size)
    assert sizing.plan_for_workers(10**6, 4, 1024) == (True, 1024)  # plenty of chunks: the size asked for
    assert sizing.plan_for_workers(300, 4, 1024, min_files_per_worker=0) == (True, sizing.SMALLEST_CHUNK)


def test_choose_counts_the_folder_and_says_why_it_uses_one_process(tmp_path, caplog):
    source = write_class_folders(tmp_path / "inbox", per_class=4)
    caplog.set_level("INFO")
    assert sizing.choose(source, tmp_path / "out.parquet", 2, 1024) == (False, 1024)
    assert "12 files, fewer than 1000 per worker" in caplog.text and "in this process" in caplog.text
    assert sizing.choose(source, tmp_path / "out.parquet", 2, 8, min_files_per_worker=0) == (True, 1 * 8)
    assert sizing.choose(source, tmp_path / "out.parquet", 1, 1024, cluster_running=True)[0] is True


def test_the_command_with_workers_on_a_small_folder_starts_no_cluster(tmp_path):
    project = tmp_path / "project"
    (project / ".dvc").mkdir(parents=True)
    source = write_class_folders(tmp_path / "inbox", per_class=2)
    folder = untrained_model_folder(tmp_path / "model")
    result = subprocess.run([str(Path(sys.executable).parent / "imgpipe"), "predict", str(source), "--model",
                             str(folder), "--workers", "2", "--out", str(project / "predictions.parquet")],
                            cwd=project, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "6 files, fewer than 1000 per worker" in result.stderr
    assert not (project / ".dvc/tmp/prefect").exists()  # no Prefect server, no Dask cluster
    assert len(pd.read_parquet(project / "predictions.parquet")) == 6
