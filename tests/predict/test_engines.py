"""The prediction engines: auto takes the fastest that passed parity and runs here, explicit choices are checked,
every row names its engine and precision. A tiny model with its exports, a few images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks import model_checksums, model_folder
from tasks.config import ArgumentError
from tasks.predict import classify as predict
from tasks.engines import engine
from tests.conftest import write_class_folders

LABELS = ["blue", "green", "red"]
SIZE = 16


@pytest.fixture(scope="module")
def exported_model(tmp_path_factory) -> Path:
    """An untrained simple_cnn with its ONNX export and int8 model in one folder, as promotion joins the candidate
    and its exports (no engines.json yet)."""
    import keras

    from tasks import networks
    from tasks.export import convert

    keras.utils.set_random_seed(11)
    folder = tmp_path_factory.mktemp("model")
    network = networks.simple_cnn(SIZE, len(LABELS), depth=2, width=4, dropout=0.0)
    model_folder.write(folder, network, LABELS, {"image_size": SIZE, "resize": "stretch"}, pd.DataFrame())
    calibration = np.random.default_rng(0).integers(0, 255, (16, SIZE, SIZE, 3), dtype=np.uint8)
    convert.write_exports(folder, folder, ["onnx"], calibration)
    model_checksums.seal(folder, model_folder.version_of(folder))
    return folder


def _record(folder: Path, rows: list[tuple[str, str, float, bool]]) -> None:
    model_folder.write_engines(folder, {"engines": [
        {"engine": name, "precision": precision, "ms_per_image": speed, "passed": passed, "agreement": 1.0,
         "images": 9, "detail": "made up for the test"} for name, precision, speed, passed in rows]})


def test_auto_takes_the_fastest_engine_that_passed_and_runs_here(exported_model, monkeypatch):
    folder = exported_model
    (folder / model_folder.ENGINES_FILE).unlink(missing_ok=True)
    assert engine.choose(folder) == ("keras", "fp32")  # nothing measured: nothing assumed
    _record(folder, [("keras", "fp32", 3.0, True), ("onnxruntime", "fp32", 2.5, True),
                     ("onnxruntime", "int8", 0.5, False), ("openvino", "int8", 0.8, True),
                     ("openvino", "bf16", 0.3, True)])
    monkeypatch.setattr(engine, "supports_bf16", lambda: True)
    assert engine.choose(folder) == ("openvino", "bf16")
    monkeypatch.setattr(engine, "supports_bf16", lambda: False)  # another CPU: bf16 is not used there
    assert engine.choose(folder) == ("openvino", "int8")  # int8 of onnxruntime failed parity: never auto
    assert engine.choose(folder, "onnxruntime") == ("onnxruntime", "fp32")
    assert engine.choose(folder, precision="fp32") == ("onnxruntime", "fp32")
    assert engine.choose(folder, "keras", "auto") == ("keras", "fp32")


def test_explicit_choices_are_checked_and_named(exported_model, monkeypatch, caplog):
    folder = exported_model
    _record(folder, [("onnxruntime", "int8", 0.5, False)])
    monkeypatch.setattr(engine, "supports_bf16", lambda: False)
    with pytest.raises(ArgumentError, match=r"`engine` openvino at `precision` bf16: this CPU has no native bf16"):
        engine.choose(folder, "openvino", "bf16")
    with pytest.raises(ArgumentError, match=r"keras has no int8 mode"):
        engine.choose(folder, "keras", "int8")
    with pytest.raises(ArgumentError, match="`engine` must be auto or one of"):
        engine.choose(folder, "tensorrt")
    assert engine.choose(folder, "onnxruntime", "int8") == ("onnxruntime", "int8")  # as asked, with a warning
    assert "failed the parity check" in caplog.text
    bare = folder.parent / "bare"
    bare.mkdir()
    for name in model_folder.REQUIRED_FILES:
        (bare / name).write_bytes((folder / name).read_bytes())
    with pytest.raises(ArgumentError, match=r"has no model.int8.onnx \(the export stage writes it"):
        engine.choose(bare, "onnxruntime", "int8")


@pytest.mark.parametrize(("name", "precision"), [("onnxruntime", "fp32"), ("openvino", "fp32"),
                                                 ("onnxruntime", "int8"), ("openvino", "int8")])
def test_every_row_records_its_engine_and_precision_and_fp32_engines_match_keras(exported_model, tmp_path, name,
                                                                                  precision):
    source = write_class_folders(tmp_path / "photos", per_class=3)
    (source / "notes.txt").write_text("not an image")
    options = predict.PredictOptions(top_k=2, batch_size=4, chunk_size=4, engine=name, precision=precision)
    summary = predict.run(source, tmp_path / "engine.parquet", exported_model, options)
    assert (summary.engine, summary.precision) == (name, precision)
    table = pd.read_parquet(tmp_path / "engine.parquet")
    ok = table[table["status"] == "ok"]
    assert (ok["engine"] == name).all() and (ok["precision"] == precision).all()
    assert (table.loc[table["status"] == "error", "engine"] == "").all()
    keras_options = predict.PredictOptions(top_k=2, batch_size=4, chunk_size=4, engine="keras", precision="fp32")
    predict.run(source, tmp_path / "keras.parquet", exported_model, keras_options)
    reference = pd.read_parquet(tmp_path / "keras.parquet")
    assert (reference.loc[reference["status"] == "ok", "engine"] == "keras").all()
    difference = np.abs(ok["confidence"].to_numpy() - reference.loc[ok.index, "confidence"].to_numpy()).max()
    assert difference <= (1e-5 if precision == "fp32" else 0.2)


def test_a_reused_row_keeps_the_engine_that_computed_it_and_another_engine_classifies_again(exported_model,
                                                                                           tmp_path):
    source = write_class_folders(tmp_path / "photos", per_class=2)
    out = tmp_path / "predictions.csv"
    onnx = predict.PredictOptions(top_k=2, engine="onnxruntime", precision="fp32")
    predict.run(source, out, exported_model, onnx)
    again = predict.run(source, out, exported_model, onnx)
    assert again.reused == again.files
    table = pd.read_csv(out, keep_default_na=False)
    assert set(table["engine"]) == {"onnxruntime"} and set(table["precision"]) == {"fp32"}
    other = predict.run(source, out, exported_model, predict.PredictOptions(top_k=2, engine="keras", precision="fp32"))
    assert other.reused == 0 and other.processed == other.files  # the probabilities depend on the engine
    assert set(pd.read_csv(out, keep_default_na=False)["engine"]) == {"keras"}


def test_the_command_line_takes_engine_and_precision(exported_model, tmp_path, capsys):
    from flows.cli import main

    source = write_class_folders(tmp_path / "photos", per_class=1)
    out = tmp_path / "predictions.parquet"
    assert main(["predict", str(source), "--out", str(out), "--model", str(exported_model), "--engine", "openvino",
                 "--precision", "fp32"]) == 0
    assert "engine:       openvino fp32" in capsys.readouterr().out
    assert set(pd.read_parquet(out)["engine"]) == {"openvino"}
    assert main(["predict", str(source), "--out", str(out), "--model", str(exported_model), "--engine", "keras",
                 "--precision", "int8"]) == 1
    assert "--engine keras at --precision int8" in capsys.readouterr().err


def test_a_damaged_engine_record_is_a_clear_error(exported_model, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in model_folder.REQUIRED_FILES:
        (folder / name).write_bytes((exported_model / name).read_bytes())
    (folder / model_folder.ENGINES_FILE).write_text(json.dumps({"engines": "fast"}))
    with pytest.raises(ValueError, match="engines.json: must be a JSON object with an 'engines' list"):
        engine.choose(folder)


def _sealed_copy(exported_model: Path, target: Path) -> Path:
    """A copy of the exported model, finished as train finishes it: engines.json (here onnxruntime fp32 the
    fastest, so that auto takes it) and the checksums of every file."""
    import shutil

    shutil.copytree(exported_model, target)
    _record(target, [("onnxruntime", "fp32", 0.1, True), ("onnxruntime", "int8", 0.2, True),
                     ("openvino", "fp32", 0.3, True), ("openvino", "int8", 0.4, True)])
    return target


def _permute_weights(path: Path) -> None:
    """Reverse the largest weight tensor of an ONNX model: still a valid model, giving other labels."""
    import onnx
    from onnx import numpy_helper

    graph_model = onnx.load(str(path))
    largest = max(graph_model.graph.initializer, key=lambda tensor: np.prod(tensor.dims))
    values = numpy_helper.to_array(largest)
    largest.CopyFrom(numpy_helper.from_array(values.reshape(-1)[::-1].reshape(values.shape).copy(), largest.name))
    onnx.save(graph_model, str(path))


def test_an_export_changed_after_training_is_refused_by_every_engine_naming_the_file(exported_model, tmp_path):
    """Issue 27 item 5: permuted model.onnx and model.int8.onnx gave wrong labels through every engine, each row
    stamped with the model's version id."""
    folder = _sealed_copy(exported_model, tmp_path / "model")
    source = write_class_folders(tmp_path / "photos", per_class=1)
    for name, precision in [("auto", "auto"), ("onnxruntime", "fp32"), ("openvino", "fp32")]:  # untouched: runs
        predict.run(source, tmp_path / f"{name}-{precision}.parquet", folder,
                    predict.PredictOptions(engine=name, precision=precision))
    _permute_weights(folder / model_folder.INT8_ONNX_FILE)
    _permute_weights(folder / "model.onnx")
    for name, precision, changed in [("auto", "auto", "model.onnx"), ("onnxruntime", "fp32", "model.onnx"),
                                     ("openvino", "fp32", "model.onnx"), ("onnxruntime", "int8", "model.int8.onnx"),
                                     ("openvino", "int8", "model.int8.onnx")]:
        out = tmp_path / f"refused-{name}-{precision}.parquet"
        with pytest.raises(ValueError, match=f"{folder / changed}: changed or damaged since train wrote it"):
            predict.run(source, out, folder, predict.PredictOptions(engine=name, precision=precision))
        assert not out.exists()
    summary = predict.run(source, tmp_path / "keras.parquet", folder, predict.PredictOptions(engine="keras"))
    assert summary.engine == "keras"  # model.keras is covered by the version id, and untouched


def test_a_changed_engine_record_or_a_folder_without_checksums_runs_no_export(exported_model, tmp_path):
    folder = _sealed_copy(exported_model, tmp_path / "model")
    record = json.loads((folder / model_folder.ENGINES_FILE).read_text())
    record["engines"][0]["ms_per_image"] = 0.0001  # engines.json trusted as written chose the engine
    (folder / model_folder.ENGINES_FILE).write_text(json.dumps(record))
    with pytest.raises(ValueError, match=f"{folder / model_folder.ENGINES_FILE}: changed or damaged"):
        engine.choose(folder)
    model_folder.write_engines(folder, record)
    (folder / model_checksums.CHECKSUMS_FILE).unlink()  # nothing to check the exports against: model.keras only
    assert engine.choose(folder) == ("keras", "fp32")
    with pytest.raises(ArgumentError, match="has no checksums.json, so its exports cannot be checked"):
        engine.choose(folder, "onnxruntime", "fp32")


def test_the_candidate_folder_as_train_writes_it_runs_model_keras(exported_model, tmp_path):
    """Train writes no exports (the export stage writes them apart): `--model data/models/candidate` runs on Keras,
    and an engine asked for by name says where its file comes from."""
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    for name in (*model_folder.REQUIRED_FILES, model_folder.HISTORY_FILE):
        (candidate / name).write_bytes((exported_model / name).read_bytes())
    model_checksums.seal(candidate, model_folder.version_of(candidate))  # as model_folder.write seals it
    assert engine.choose(candidate) == ("keras", "fp32")
    with pytest.raises(ArgumentError, match=r"has no model.onnx \(the export stage writes it: export.formats"):
        engine.choose(candidate, "onnxruntime", "fp32")
    summary = predict.run(write_class_folders(tmp_path / "photos", per_class=1), tmp_path / "rows.parquet", candidate,
                          predict.PredictOptions())
    assert summary.engine == "keras"
