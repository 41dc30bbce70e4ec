"""Messages instead of tracebacks: disk full or an I/O error says where and what to do; no model nobody chose."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tasks.predict import classify, decode, store
from tests.conftest import PROJECT_ROOT, write_class_folders
from tests.predict.conftest import save_model

pytestmark = pytest.mark.filterwarnings("ignore:You are using a softmax:UserWarning")


def _predict(source: Path, out: Path, model: Path, *more: str) -> list[str]:
    return ["predict", str(source), "--out", str(out), "--model", str(model), "--chunk-size", "4", *more]


def test_disk_full_while_writing_a_part_says_what_filled_up_and_keeps_the_finished_chunks(
        tmp_path, one_label_model, monkeypatch, capsys):
    from flows.cli import main

    source = write_class_folders(tmp_path / "photos", per_class=4)
    out = tmp_path / "out.parquet"
    written = []
    real_write_table = store.pq.write_table

    def fill_up_after_two_parts(table, where, **options):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
        written.append(where)
        return real_write_table(table, where, **options)

    monkeypatch.setattr(store.pq, "write_table", fill_up_after_two_parts)
    assert main(_predict(source, out, one_label_model("thing"))) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"imgpipe: error: {store.part_file(store.state_folder(out), 2)}: writing failed")
    assert f"the file system of {store.state_folder(out)} is full (" in error and "MB free now" in error
    assert "free some space there or choose another --out" in error and "run the same command again" in error
    assert "Traceback" not in error and not out.exists()
    assert not list(store.state_folder(out).glob(".*.partial"))  # nothing half-written left taking space

    monkeypatch.setattr(store.pq, "write_table", real_write_table)
    summary = classify.run(source, out, one_label_model("thing"), classify.PredictOptions(top_k=1, chunk_size=4))
    assert summary.resumed == 8 and summary.ok == 12


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare(1) to mount a small tmpfs")
def test_a_real_full_disk_stops_predict_with_a_message(tmp_path, one_label_model):
    """A tmpfs of 1 MiB filled up, in a user and mount namespace of its own (no root needed, nothing left mounted)."""
    source = write_class_folders(tmp_path / "photos", per_class=2)
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (f"mount -t tmpfs -o size=1m tmpfs {disk} && (head -c 2000000 /dev/zero > {disk}/filler; true) && "
              f"{sys.executable} -m flows.cli " + " ".join(_predict(source, disk / "out.parquet",
                                                                      one_label_model("thing"))))
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300)
    if "mount" in done.stderr and "imgpipe" not in done.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("imgpipe: error: ") and "No space left on device [ENOSPC]" in last, done.stderr[-3000:]
    assert f"the file system of {disk / 'out.parquet.parts'} is full" in last and "Traceback" not in done.stderr


def test_an_io_error_while_reading_stops_the_run_naming_the_file(tmp_path, one_label_model, monkeypatch, capsys):
    """The machine's trouble is not the file's: no `unreadable` error row is recorded for it."""
    from flows.cli import main
    from tasks import images

    source = write_class_folders(tmp_path / "photos", per_class=1)
    real_read_file = images.read_file

    def failing_disk(name, dir_fd=None, **keywords):
        if str(name) == "green_000.png":
            raise OSError(errno.EIO, "Input/output error", name)
        return real_read_file(name, dir_fd=dir_fd, **keywords)

    monkeypatch.setattr(decode.images, "read_file", failing_disk)
    out = tmp_path / "out.parquet"
    assert main(_predict(source, out, one_label_model("thing"))) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"imgpipe: error: {source / 'green' / 'green_000.png'}: reading failed: "
                            "Input/output error [EIO]")
    assert "check the disk" in error and not out.exists()


def test_no_production_model_refuses_the_candidate_and_says_how_to_choose_it(tmp_path, monkeypatch, capsys):
    from flows.cli import main

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PROJECT_ROOT / "params.yaml", project / "params.yaml")
    candidate = save_model(project / "data" / "models" / "candidate", ["blue", "green", "red"])
    source = write_class_folders(tmp_path / "photos", per_class=1)
    monkeypatch.chdir(project)
    assert main(["predict", str(source), "--out", "out.parquet"]) == 1
    error = capsys.readouterr().err
    assert "no production model" in error and "choose it explicitly with --model data/models/candidate" in error
    assert not (project / "out.parquet").exists()

    assert main(["predict", str(source), "--out", "out.parquet", "--model", "data/models/candidate"]) == 0
    assert (pd.read_parquet(project / "out.parquet")["status"] == "ok").all()
    assert candidate.is_dir()


def test_disk_full_while_copying_into_says_which_folder_and_leaves_no_partial_copy(tmp_path, one_label_model,
                                                                                   monkeypatch):
    import os

    from tasks.predict import copy_into

    source = write_class_folders(tmp_path / "photos", per_class=1)
    out = tmp_path / "out.parquet"
    classify.run(source, out, one_label_model("thing"), classify.PredictOptions(top_k=1))
    real_fchmod = os.fchmod
    placed = []

    def full_after_one(descriptor, mode):
        if placed:
            raise OSError(errno.ENOSPC, "No space left on device")
        placed.append(descriptor)
        return real_fchmod(descriptor, mode)

    monkeypatch.setattr(os, "fchmod", full_after_one)
    target = tmp_path / "sorted"
    with pytest.raises(RuntimeError) as stopped:
        copy_into.copy_into(out, source, target)
    assert str(stopped.value).startswith(f"{target}: copying into failed: No space left on device [ENOSPC]: the "
                                         f"file system of {target} is full")
    assert "choose another `copy_into`" in str(stopped.value) and "already placed are recognised" in str(stopped.value)
    assert not [path for path in target.rglob("*") if path.name.endswith(".partial")]

    monkeypatch.setattr(os, "fchmod", real_fchmod)
    again = copy_into.copy_into(out, source, target)
    assert (again.already_there, again.placed) == (1, 2)
