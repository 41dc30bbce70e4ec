"""Exports of a model (SavedModel, ONNX, OpenVINO IR, LiteRT, the int8 ONNX model), each held to the Keras model;
the tf2onnx mends; a missing package named with the key to change. Tiny models, a few images."""

import importlib.util

import numpy as np
import pandas as pd
import pytest

from tasks import model_checksums, model_folder, networks
from tasks.engines import engine, engine_check, keras_engine
from tasks.export import convert as export

LABELS = ["a", "b", "c"]
SIZE = 16


@pytest.fixture(scope="module")
def images():
    generator = np.random.default_rng(5)
    base = generator.integers(0, 255, (3, 1, 1, 3))
    # three colour families, so the untrained model does not give every image the same label
    return np.clip(base.repeat(20, axis=0) + generator.normal(0, 30, (60, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, images):
    import keras

    keras.utils.set_random_seed(3)
    folder = tmp_path_factory.mktemp("model")
    network = networks.simple_cnn(SIZE, len(LABELS), depth=2, width=4, dropout=0.0)
    model_folder.write(folder, network, LABELS, {"image_size": SIZE, "resize": "stretch"}, pd.DataFrame())
    export.write_exports(folder, folder, ["saved_model", "onnx", "openvino", "litert"], calibration=images[:32])
    model_checksums.seal(folder, model_folder.version_of(folder))  # one whole model folder, as promotion seals it
    return folder


def test_every_export_is_written_beside_the_model_and_agrees_with_it(exported, images):
    for name in ("saved_model", "onnx", "openvino", "litert", "int8"):
        assert model_folder.export_path(exported, name).exists(), name
    info = model_folder.read_info(exported)
    runners = [keras_engine.SavedModelRunner(model_folder.export_path(exported, "saved_model"), 3),
               keras_engine.LiteRtRunner(model_folder.export_path(exported, "litert"), 3),
               engine.open_engine(info, "onnxruntime", "fp32"), engine.open_engine(info, "openvino", "fp32")]
    figures = engine_check.compare(keras_engine.KerasEngine(info), runners, [images[:25], images[25:]])
    assert [item.images for item in figures] == [60] * 5
    for item in figures:
        assert not item.error and item.max_difference <= 1e-5 and item.agreement == 1.0, item.detail()


def test_the_int8_model_keeps_uint8_input_and_runs_under_both_engines(exported, images):
    import onnx

    quantized = onnx.load(str(model_folder.export_path(exported, "int8")))
    assert quantized.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert any(node.op_type == "QuantizeLinear" for node in quantized.graph.node)
    assert not any(node.op_type == "Softmax" and "quant" in node.name.lower() for node in quantized.graph.node)
    info = model_folder.read_info(exported)
    reference = keras_engine.KerasEngine(info).probabilities(images)
    for name in ("onnxruntime", "openvino"):
        probabilities = engine.open_engine(info, name, "int8").probabilities(images)
        assert probabilities.shape == reference.shape
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
        assert np.abs(probabilities - reference).max() < 0.2  # int8 is close, not equal: parity decides its use


def test_engines_json_measures_each_engine_against_keras(exported, images):
    record = engine_check.measure_engines(exported, [images[:40], images[40:]])
    rows = {(row["engine"], row["precision"]): row for row in record["engines"]}
    expected = {("keras", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"),
                ("openvino", "int8")} | ({("openvino", "bf16")} if engine.supports_bf16() else set())
    assert set(rows) == expected
    for (name, precision), row in rows.items():
        assert row["images"] == 60 and row["ms_per_image"] > 0, row
        if precision == "fp32":
            assert row["passed"] and row["max_difference"] <= engine.MAX_FP32_DIFFERENCE
        else:
            assert row["passed"] == (row["agreement"] >= engine.MIN_AGREEMENT)


def test_unread_graph_inputs_left_by_tf2onnx_are_removed(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["out"])], "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("normalization/Sub/y:0", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    export._drop_unread_inputs(path)
    assert [item.name for item in onnx.load(str(path)).graph.input] == ["image"]


def test_a_missing_export_package_names_the_key_to_change(exported, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "tf2onnx" else real(name))
    with pytest.raises(ValueError, match=r"export.formats: onnx needs the package\(s\) tf2onnx.*pip install tf2onnx"):
        export.write_exports(exported, exported, ["onnx"], calibration=None)
