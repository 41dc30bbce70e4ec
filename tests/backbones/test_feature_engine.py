"""The features engine: exports written once and re-created when damaged, engines held to Keras, specs opened in a
fresh process without TensorFlow, broken exports recorded as failed candidates. One cache folder for the module: the
weights conversion and the export cost seconds each."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.backbones import feature_engine, feature_exports
from tasks.backbones.feature_engine import EngineSpec

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BACKBONE, IMAGE_SIZE = "efficientnet_lite0", 64


def scenes(count: int, seed: int = 0) -> np.ndarray:
    """Smooth pictures of large colour patches: closer to photos than noise, whose ImageNet labels are coin tosses."""
    generator = np.random.default_rng(seed)
    return np.stack([np.asarray(Image.fromarray(generator.integers(0, 255, (5, 5, 3), dtype=np.uint8))
                                .resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)) for _ in range(count)])


def relative_difference(features: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(features - expected).max() / np.abs(expected).max())


def min_cosine(features: np.ndarray, expected: np.ndarray) -> float:
    norms = np.linalg.norm(features, axis=1) * np.linalg.norm(expected, axis=1)
    return float(((features * expected).sum(axis=1) / norms).min())


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGPIPE_CACHE", str(tmp_path_factory.mktemp("imgpipe-cache")))
        patch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
        yield


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return scenes(8)


@pytest.fixture(scope="module")
def keras_features(sample: np.ndarray) -> np.ndarray:
    return feature_engine.open_engine(EngineSpec(BACKBONE, IMAGE_SIZE, "keras", "fp32", None)).features(sample)


@pytest.fixture(scope="module")
def chosen(sample: np.ndarray) -> tuple[EngineSpec, list[dict]]:
    return feature_engine.choose(BACKBONE, IMAGE_SIZE, sample)


def file_spec(engine: str, precision: str = "fp32") -> EngineSpec:
    files = feature_exports.export_files(BACKBONE, IMAGE_SIZE)
    return EngineSpec(BACKBONE, IMAGE_SIZE, engine, precision, str(files["onnx" if engine == "onnxruntime"
                                                                         else "openvino"]))


def test_export_files_writes_once_and_reuses(monkeypatch: pytest.MonkeyPatch) -> None:
    files = feature_exports.export_files(BACKBONE, IMAGE_SIZE)
    written = [files["onnx"], files["openvino"], files["openvino"].with_suffix(".bin")]
    before = {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in written}

    def no_export(*arguments, **keywords):
        raise AssertionError("exported again although the files are whole")

    monkeypatch.setattr(feature_exports, "_export", no_export)
    assert feature_exports.export_files(BACKBONE, IMAGE_SIZE) == files
    assert {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in written} == before
    record = json.loads(files["onnx"].with_suffix(".json").read_text())
    assert record["image_size"] == IMAGE_SIZE and len(record["sha256"]) == 3
    assert [path.name for path in files["onnx"].parent.iterdir() if path.name.startswith(".")] == []  # no leftovers


def test_a_damaged_export_is_refused_and_exported_again(monkeypatch: pytest.MonkeyPatch, sample: np.ndarray,
                                                        keras_features: np.ndarray) -> None:
    specs = [file_spec("onnxruntime"), file_spec("openvino")]
    onnx_file, weights_file = Path(specs[0].file), Path(specs[1].file).with_suffix(".bin")
    onnx_file.write_bytes(onnx_file.read_bytes()[:onnx_file.stat().st_size // 2])
    weights = bytearray(weights_file.read_bytes())
    weights[len(weights) // 2] ^= 0xFF  # a change the runtime cannot see: the features would silently differ
    weights_file.write_bytes(bytes(weights))
    for spec in specs:
        with pytest.raises(ValueError, match="sha256"):
            feature_engine.open_engine(spec)

    exports = []
    original = feature_exports._export
    monkeypatch.setattr(feature_exports, "_export", lambda *arguments: exports.append(1) or original(*arguments))
    assert [file_spec("onnxruntime"), file_spec("openvino")] == specs
    assert len(exports) == 1  # the second call found the files the first one wrote whole
    for spec in specs:
        features = feature_engine.open_engine(spec).features(sample)
        assert relative_difference(features, keras_features) <= feature_engine.MAX_FP32_DIFFERENCE


def test_choose_returns_the_fastest_passing_spec(chosen: tuple[EngineSpec, list[dict]]) -> None:
    spec, records = chosen
    by_engine = {(record["engine"], record["precision"]): record for record in records}
    assert set(by_engine) == {("keras", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")}
    passed = [record for record in records if record["passed"]]
    best = by_engine[spec.engine, spec.precision]
    timed = [record["ms_per_image"] for record in passed if record["ms_per_image"] is not None]
    assert best["passed"] and best["ms_per_image"] == min(timed)
    assert by_engine["keras", "fp32"]["passed"]
    # the reference is timed only when no exported engine agrees with it (it is then the one chosen)
    assert (by_engine["keras", "fp32"]["ms_per_image"] is None) == (spec.engine != "keras")
    # fp32 engines on an exported file agree with Keras to rounding: if they fail, the export is wrong
    assert by_engine["onnxruntime", "fp32"]["passed"], by_engine["onnxruntime", "fp32"]["detail"]
    assert by_engine["openvino", "fp32"]["passed"], by_engine["openvino", "fp32"]["detail"]
    if not feature_engine.supports_bf16():
        assert not by_engine["openvino", "bf16"]["passed"]
    assert spec.engine == "keras" or Path(spec.file).is_file()
    json.dumps(records)  # the stage writes them to its summary file


def test_every_passing_engine_gives_the_features_of_keras(chosen: tuple[EngineSpec, list[dict]], sample: np.ndarray,
                                                          keras_features: np.ndarray) -> None:
    _, records = chosen
    for record in [record for record in records if record["passed"]]:
        engine = feature_engine.open_engine(file_spec(record["engine"], record["precision"])
                                            if record["engine"] != "keras"
                                            else EngineSpec(BACKBONE, IMAGE_SIZE, "keras", "fp32", None))
        features = engine.features(sample[:4])
        assert features.dtype == np.float32 and features.shape == (4, 1280)
        assert min_cosine(features, keras_features[:4]) >= feature_engine.MIN_COSINE, record["detail"]
        if record["precision"] == "fp32":
            assert relative_difference(features, keras_features[:4]) <= feature_engine.MAX_FP32_DIFFERENCE
        empty = engine.features(sample[:0])
        assert empty.shape == (0, 1280) and empty.dtype == np.float32


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_a_spec_opens_in_a_fresh_process_without_tensorflow(engine: str, tmp_path: Path, sample: np.ndarray) -> None:
    spec = file_spec(engine)
    here = feature_engine.open_engine(spec, threads=1).features(sample)
    (tmp_path / "job.pickle").write_bytes(pickle.dumps((spec, sample)))
    child = (
        "import json, pickle, sys\n"
        "import numpy as np\n"
        "from tasks.backbones import feature_engine\n"
        "spec, pixels = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "np.save(sys.argv[2], feature_engine.open_engine(spec, threads=1).features(pixels))\n"
        "print(json.dumps(sorted(name for name in ('tensorflow', 'keras') if name in sys.modules)))\n"
    )
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                                              os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", child, str(tmp_path / "job.pickle"), str(tmp_path / "out.npy")],
                            cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    there = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(there, here, rtol=0, atol=1e-5 * float(np.abs(here).max()))


def test_a_broken_export_file_is_a_failed_candidate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    sample: np.ndarray) -> None:
    files = feature_exports.export_files(BACKBONE, IMAGE_SIZE)
    broken = tmp_path / "broken.onnx"
    shutil.copyfile(files["onnx"], broken)
    with broken.open("r+b") as handle:
        handle.truncate(broken.stat().st_size // 3)
    monkeypatch.setattr(feature_exports, "export_files", lambda *arguments: {**files, "onnx": broken})
    spec, records = feature_engine.choose(BACKBONE, IMAGE_SIZE, sample[:4])
    by_engine = {(record["engine"], record["precision"]): record for record in records}
    assert not by_engine["onnxruntime", "fp32"]["passed"]
    assert "failed" in by_engine["onnxruntime", "fp32"]["detail"]
    assert by_engine["openvino", "fp32"]["passed"]
    assert spec.engine != "onnxruntime" and by_engine[spec.engine, spec.precision]["passed"]


def test_an_export_that_fails_leaves_keras(monkeypatch: pytest.MonkeyPatch, sample: np.ndarray) -> None:
    def failing(*arguments):
        raise RuntimeError("tf2onnx could not convert the model")

    monkeypatch.setattr(feature_exports, "export_files", failing)
    spec, records = feature_engine.choose(BACKBONE, IMAGE_SIZE, sample[:4])
    assert spec == EngineSpec(BACKBONE, IMAGE_SIZE, "keras", "fp32", None)
    for record in records:
        assert record["passed"] == (record["engine"] == "keras")
        if record["engine"] != "keras" and record["precision"] == "fp32":
            assert "tf2onnx could not convert" in record["detail"]


def test_choose_refuses_a_sample_of_the_wrong_shape(sample: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"uint8 \[n, 64, 64, 3\]"):
        feature_engine.choose(BACKBONE, IMAGE_SIZE, sample[:, :32])
    with pytest.raises(ValueError, match="float32"):
        feature_engine.choose(BACKBONE, IMAGE_SIZE, sample.astype(np.float32))
