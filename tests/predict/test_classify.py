"""Bulk classification: one row per file, error rows, resume after kill -9, incremental re-runs, Dask, copy-into, CLI."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks import images, model_folder
from tasks.predict import classify as predict
from tasks.params import PathsParams
from tasks.paths import Paths
from tasks.predict import store as predict_store
from tests.conftest import PROJECT_ROOT, make_image, write_class_folders

LABELS = ["blue", "green", "red"]
IMAGE_SIZE = 16
MAX_PIXELS = 100_000  # so that a 400x400 image is "oversized" without a huge file


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """An untrained simple_cnn saved as training saves one (tasks/model_folder.py): model, labels, card."""
    import keras

    from tasks import networks

    keras.utils.set_random_seed(7)
    folder = tmp_path_factory.mktemp("model")
    network = networks.simple_cnn(IMAGE_SIZE, len(LABELS), depth=2, width=4, dropout=0.0)
    model_folder.write(folder, network, LABELS, {"image_size": IMAGE_SIZE, "resize": "crop"}, pd.DataFrame())
    return folder


BROKEN = {
    "broken/truncated.jpg": "corrupt",
    "broken/not_really.png": "not_an_image",
    "broken/empty.jpg": "empty_file",
    "broken/huge.png": "too_many_pixels",
    "notes.txt": "unsupported_format",
}


def write_tree(root: Path, per_class: int = 6) -> Path:
    """Class folders (the labels are not used), deeper folders, broken files, a link out and a hidden file."""
    write_class_folders(root, per_class=per_class)
    deep = root / "more" / "deeper"
    deep.mkdir(parents=True)
    make_image((200, 40, 40), seed=99, size=30).save(deep / "a-b.jpg")
    make_image((40, 40, 200), seed=98, size=30).save(root / "more" / "a.webp")
    (root / "broken").mkdir()
    buffer = root / "broken" / "whole.jpg"
    make_image((10, 200, 10), seed=97, size=64).save(buffer, quality=90)
    (root / "broken" / "truncated.jpg").write_bytes(buffer.read_bytes()[:300])
    buffer.unlink()
    (root / "broken" / "not_really.png").write_bytes(b"this is not a picture")
    (root / "broken" / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (400, 400)).save(root / "broken" / "huge.png")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(b"skipped")
    outside = root.parent / "outside.jpg"
    make_image((1, 2, 3), seed=1).save(outside)
    (root / "link_out.jpg").symlink_to(outside)
    return root


def options(**changes) -> predict.PredictOptions:
    return predict.PredictOptions(**{"top_k": 2, "batch_size": 4, "chunk_size": 8, "max_pixels": MAX_PIXELS} | changes)


def expected_paths(root: Path) -> list[str]:
    """Every file and link: one row each (the link out and the hidden file as `skipped` rows)."""
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file() or path.is_symlink())


def test_every_file_gets_exactly_one_row_and_broken_files_become_error_rows(tmp_path, model_dir):
    source = write_tree(tmp_path / "photos")
    summary = predict.run(source, tmp_path / "predictions.parquet", model_dir, options())
    table = pd.read_parquet(tmp_path / "predictions.parquet")

    assert list(table["path"]) == expected_paths(source)  # every entry once, sorted
    assert summary.files == len(table) and summary.ok == (table["status"] == "ok").sum()
    skipped = table[table["status"] == "skipped"].set_index("path")
    assert skipped["reason"].to_dict() == {".hidden.jpg": "hidden", "link_out.jpg": "link"}
    assert "not followed" in skipped.loc["link_out.jpg", "detail"] and skipped["bytes"].isna().all()
    assert summary.skipped == {"hidden": 1, "link": 1}
    errors = table[table["status"] == "error"].set_index("path")
    assert errors["reason"].to_dict() == BROKEN
    assert "raise max_pixels" in errors.loc["broken/huge.png", "detail"]
    assert errors["label"].isna().all() and errors["confidence"].isna().all()

    ok = table[table["status"] == "ok"]
    assert set(ok["label"]) <= set(LABELS) and (ok["label"] == ok["top_1_label"]).all()
    assert (ok["confidence"] == ok["top_1_probability"]).all()
    assert (ok["top_1_probability"] >= ok["top_2_probability"]).all() and (ok["top_1_label"] != ok["top_2_label"]).all()
    assert (ok["model_version"] == model_folder.read_info(model_dir).version).all()
    first = ok.iloc[0]
    assert first["sha256"] == hashlib.sha256((source / first["path"]).read_bytes()).hexdigest()
    assert not predict_store.state_folder(tmp_path / "predictions.parquet").exists()  # resume state removed at the end


def test_predictions_see_the_pixels_training_sees(tmp_path, model_dir):
    """The same normalisation as training (images.load_rgb_array with the model card's size and resize mode)."""
    source = write_class_folders(tmp_path / "photos", per_class=2)
    predict.run(source, tmp_path / "out.parquet", model_dir, options(top_k=3))
    table = pd.read_parquet(tmp_path / "out.parquet").set_index("path")
    network = model_folder.load(model_dir)
    paths = list(table.index)
    pixels = np.stack([images.load_rgb_array(source / path, IMAGE_SIZE, "crop", MAX_PIXELS) for path in paths])
    expected = network.predict_on_batch(pixels)
    got = np.array([[table.loc[path, f"top_{rank}_probability"] for rank in (1, 2, 3)] for path in paths])
    np.testing.assert_allclose(got, np.sort(expected, axis=1)[:, ::-1], rtol=1e-5, atol=1e-6)
    assert [table.loc[path, "label"] for path in paths] == [LABELS[i] for i in expected.argmax(axis=1)]


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _start_cli(*arguments: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "predict", *arguments], cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_a_run_killed_with_sigkill_resumes_to_the_same_table(tmp_path, model_dir):
    source = write_tree(tmp_path / "photos", per_class=100)  # > 256 files: decoded by worker processes
    reference = tmp_path / "reference.parquet"
    predict.run(source, reference, model_dir, options())

    out = tmp_path / "killed.parquet"
    state = predict_store.state_folder(out)
    process = _start_cli(str(source), "--out", str(out), "--model", str(model_dir), "--top-k", "2",
                         "--batch-size", "4", "--chunk-size", "8", "--max-pixels", str(MAX_PIXELS))
    deadline = time.monotonic() + 120
    while not list(state.glob("part-*.parquet")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    decoders = _children(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list(state.glob("part-*.parquet")))
    chunks = -(-len(expected_paths(source)) // 8)
    assert not out.exists() and 0 < finished < chunks, (finished, chunks, process.stdout.read().decode()[-2000:])

    deadline = time.monotonic() + 10  # the decoding processes notice their parent is gone and end
    while any(Path(f"/proc/{pid}").exists() for pid in decoders) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert decoders and not any(Path(f"/proc/{pid}").exists() for pid in decoders)

    summary = predict.run(source, out, model_dir, options())
    table = pd.read_parquet(out)
    read_again = (table.iloc[summary.resumed:]["status"] != "skipped").sum()  # skipped entries are not read
    assert summary.resumed == finished * 8 and summary.processed == read_again
    pd.testing.assert_frame_equal(table, pd.read_parquet(reference))


def test_a_second_run_classifies_only_new_and_changed_files(tmp_path, model_dir):
    source = write_tree(tmp_path / "photos")
    same_size = source / "blue" / "flat.bmp"  # uncompressed: other pixels, the same number of bytes
    Image.new("RGB", (20, 20), (10, 20, 200)).save(same_size)
    out = tmp_path / "predictions.parquet"
    first = predict.run(source, out, model_dir, options())
    skipped = sum(first.skipped.values())  # the hidden file and the link out: never read
    assert first.processed == first.files - skipped and first.reused == 0

    make_image((9, 9, 9), seed=5).save(source / "green" / "new.png")
    changed = source / "red" / "red_000.png"
    make_image((250, 250, 250), seed=6).save(changed)  # new bytes, new mtime
    stat = same_size.stat()
    Image.new("RGB", (20, 20), (200, 20, 10)).save(same_size)
    os.utime(same_size, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: only the hash tells
    assert same_size.stat().st_size == stat.st_size
    (source / "green" / "green_001.jpg").unlink()

    second = predict.run(source, out, model_dir, options())
    retried_errors = len(BROKEN)  # failed files are tried again
    assert second.processed == 3 + retried_errors, second
    assert second.reused == second.files - second.processed - skipped
    assert second.files == first.files

    fresh = tmp_path / "fresh.parquet"
    predict.run(source, fresh, model_dir, options())
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(fresh))
    assert predict.run(source, out, model_dir, options()).processed == retried_errors


def test_the_flow_on_a_two_worker_dask_cluster_gives_the_same_table(tmp_path, model_dir, prefect_server):
    from flows.classify import classify_directory

    source = write_tree(tmp_path / "photos", per_class=12)
    single = tmp_path / "single.parquet"
    predict.run(source, single, model_dir, options())

    sharded = tmp_path / "sharded.parquet"
    summary = classify_directory(source=str(source), out=str(sharded), model=str(model_dir), top_k=2, batch_size=4,
                                 chunk_size=8, max_pixels=MAX_PIXELS, workers=2, min_files_per_worker=0)
    assert summary["processes"] == 2, summary  # both Dask workers classified some chunks
    pd.testing.assert_frame_equal(pd.read_parquet(sharded), pd.read_parquet(single))

    in_process = tmp_path / "in_process.parquet"  # workers=1: the flow classifies in its own process, no Dask
    classify_directory(source=str(source), out=str(in_process), model=str(model_dir), top_k=2, batch_size=4,
                       chunk_size=8, max_pixels=MAX_PIXELS)
    pd.testing.assert_frame_equal(pd.read_parquet(in_process), pd.read_parquet(single))


def test_copy_into_puts_each_classified_file_under_its_label_and_overwrites_nothing(tmp_path, model_dir):
    from tasks.predict import copy_into as predict_copy

    source = write_tree(tmp_path / "photos")
    out = tmp_path / "predictions.csv"
    predict.run(source, out, model_dir, options())
    table = pd.read_csv(out, keep_default_na=False)
    ok = table[table["status"] == "ok"]
    sorted_dir = tmp_path / "sorted"

    first = predict_copy.copy_into(out, source, sorted_dir)
    assert first.placed == len(ok) and first.conflict == 0
    for row in ok.itertuples():
        assert (sorted_dir / row.label / row.path).read_bytes() == (source / row.path).read_bytes()
    assert not any(sorted_dir.rglob("*truncated*"))

    victim = ok.iloc[0]
    target = sorted_dir / victim["label"] / victim["path"]
    target.write_bytes(b"someone else's file")
    (sorted_dir / ok.iloc[1]["label"] / ok.iloc[1]["path"]).unlink()
    again = predict_copy.copy_into(out, source, sorted_dir)
    assert (again.placed, again.already_there, again.conflict) == (1, len(ok) - 2, 1)
    assert target.read_bytes() == b"someone else's file"

    linked = predict_copy.copy_into(out, source, tmp_path / "linked", link=True)
    assert linked.placed == len(ok)
    row = ok.iloc[2]
    assert (tmp_path / "linked" / row["label"] / row["path"]).stat().st_ino == (source / row["path"]).stat().st_ino
    with pytest.raises(ValueError, match="inside the classified folder"):
        predict_copy.copy_into(out, source, source / "sorted")


def test_cli_predict_writes_csv_and_copies(tmp_path, model_dir, capsys):
    from flows.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--out", "--model", "--top-k", "--batch-size", "--workers", "--scheduler", "--copy-into"):
        assert option in help_text

    source = write_tree(tmp_path / "photos")
    out = tmp_path / "predictions.csv"
    code = main(["predict", str(source), "--out", str(out), "--model", str(model_dir), "--top-k", "2",
                 "--max-pixels", str(MAX_PIXELS), "--copy-into", str(tmp_path / "sorted")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "imgpipe predict" in printed and "copied into" in printed
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table["path"]) == expected_paths(source)
    assert list(table.columns[:8]) == ["path", "status", "label", "confidence", "top_1_label", "top_1_probability",
                                       "top_2_label", "top_2_probability"]
    parquet = tmp_path / "same.parquet"
    predict.run(source, parquet, model_dir, options())
    expected = pd.read_parquet(parquet)
    assert (table["label"] == expected["label"].fillna("")).all()
    np.testing.assert_array_equal(table["confidence"].replace("", np.nan).astype("float32"), expected["confidence"])


def test_a_missing_model_or_a_bad_output_name_is_a_clear_error(tmp_path, model_dir):
    paths = Paths(PathsParams(), tmp_path)
    with pytest.raises(ValueError, match="no model found.*the train stage"):
        predict.default_model(paths)
    paths.candidate.mkdir(parents=True)
    (paths.candidate / "model.keras").write_bytes(b"")
    with pytest.raises(ValueError, match="no production model.*`model` .*candidate"):  # never used unasked
        predict.default_model(paths)
    with pytest.raises(ValueError, match="labels.json, model_card.json missing"):
        model_folder.read_info(paths.candidate)
    source = write_class_folders(tmp_path / "photos", per_class=1)
    with pytest.raises(ValueError, match=r"\.parquet or \.csv"):
        predict.run(source, tmp_path / "predictions.xlsx", model_dir, options())


def test_the_command_line_names_its_flags_where_the_code_names_arguments(tmp_path, model_dir, capsys):
    from flows.cli import main

    source = write_class_folders(tmp_path / "photos", per_class=1)
    with pytest.raises(ValueError, match=r"`out` .*\.parquet or \.csv"):  # as the code and the flow say it
        predict.run(source, tmp_path / "predictions.xlsx", model_dir, options())
    assert main(["predict", str(source), "--out", str(tmp_path / "predictions.xlsx"), "--model", str(model_dir)]) == 1
    error = capsys.readouterr().err
    assert "--out" in error and "`out`" not in error  # as the command line says it
