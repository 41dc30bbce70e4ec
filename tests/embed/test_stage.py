"""The embed stage: every image's features computed once (a new shard for new images only), compacted when images
go, recomputed when the settings change, none for scans; the engine chosen once per machine. One weights cache for
the module: the conversion and the export cost seconds once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tasks import cpu, embedding_store, images, processed_store
from tasks import manifest as manifest_file
from tasks.backbones import feature_engine
from tasks.backbones.feature_engine import EngineSpec
from tasks.config import load_config
from tasks.embed import stage as embed
from tasks.embed.compute import Embedder
from tasks.ingest import stage as ingest
from tasks.params import Config
from tasks.paths import Paths
from tasks.preprocess import stage as preprocess
from tests.conftest import CLASS_COLOURS, PROJECT_ROOT, make_photo

BACKBONE, IMAGE_SIZE, FEATURES = "efficientnet_lite2", 64, 1280
PER_CLASS = 16


def write_photos(root: Path, per_class: int = PER_CLASS, first: int = 0) -> list[str]:
    """3 classes x `per_class` photo-like images (PNG and JPEG), numbered from `first`; their manifest paths."""
    written = []
    for class_index, (label, colour) in enumerate(CLASS_COLOURS.items()):
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(first, first + per_class):
            name = f"{label}/{label}_{index:03d}.{'png' if index % 2 == 0 else 'jpg'}"
            make_photo(colour, seed=class_index * 1000 + index).save(root / name)
            written.append(name)
    return written


@pytest.fixture
def photos(tmp_path: Path) -> tuple[Config, Paths]:
    """The real params.yaml shrunk for 48 photo-like images at 64 px, every path under tmp_path; engine keras (the
    engine check has a test of its own), one process."""
    source = tmp_path / "source"
    write_photos(source)
    config, _ = load_config(PROJECT_ROOT / "params.yaml", overrides={
        "ingest.source": str(source),
        "validate.min_images_per_class": 3,
        "preprocess.image_size": IMAGE_SIZE,
        "preprocess.val_fraction": 0.25,
        "preprocess.test_fraction": 0.25,
        "embed.engine": "keras",
        "embed.workers": 1,
    })
    return config, Paths(config.paths, tmp_path)


def prepare(config: Config, paths: Paths) -> None:
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths, config.train.model,
                   config.train.weights)


def run_embed(config: Config, paths: Paths) -> dict:
    return embed.run(config.embed, config.ingest.max_pixels, paths)


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every chunk the stage computes features of (it runs in this process at these sizes)."""
    chunks: list[int] = []

    class Counting(Embedder):
        def __call__(self, chunk):
            chunks.append(len(chunk))
            return super().__call__(chunk)

    monkeypatch.setattr(embed, "Embedder", Counting)
    return chunks


@pytest.fixture(scope="module")
def keras_features():
    """Keras fp32 features of pixels at a size: the reference every engine is held to."""
    opened: dict[int, feature_engine.FeatureEngine] = {}

    def features(pixels: np.ndarray) -> np.ndarray:
        size = pixels.shape[1]
        if size not in opened:
            opened[size] = feature_engine.open_engine(EngineSpec(BACKBONE, size, "keras", "fp32", None))
        return opened[size].features(pixels)

    return features


def from_source(config: Config, paths: Paths, names: list[str], size: int = IMAGE_SIZE) -> np.ndarray:
    """The images as prediction decodes them, from the source files themselves."""
    source = paths.resolve(config.ingest.source)
    return np.stack([images.load_rgb_array(source / name, size, "crop", config.ingest.max_pixels) for name in names])


def assert_same_features(stored: np.ndarray, expected: np.ndarray) -> None:
    """Equal within what storing float16 (and an engine held to Keras within 1e-3) leaves."""
    assert stored.shape == expected.shape
    np.testing.assert_allclose(stored, expected, rtol=2e-3, atol=2e-3 * float(np.abs(expected).max()))


def shard_times(paths: Paths) -> dict[str, int]:
    folder = paths.embeddings
    return {name: (folder / name).stat().st_mtime_ns for name in embedding_store.shard_names(folder)}


def sha256s_of(paths: Paths, names: list[str]) -> list[str]:
    manifest = manifest_file.read(paths.manifest).set_index("path")
    return manifest.loc[names, "sha256"].tolist()


def test_a_first_run_computes_every_image_and_reads_back_each_split_row(photos, computed, keras_features):
    config, paths = photos
    prepare(config, paths)
    processed = json.loads((paths.processed / processed_store.SUMMARY_FILE).read_text())
    assert processed["model"]["model"] == BACKBONE and processed["pixels"] is False
    assert processed_store.shard_names(paths.processed) == []  # the features route keeps no pixels

    summary = run_embed(config, paths)

    assert sum(computed) == 3 * PER_CLASS
    assert summary["used"] is True and summary["backbone"] == BACKBONE and summary["images"] == 3 * PER_CLASS
    assert summary["settings"] == embedding_store.settings(processed["model"]["weights_id"], IMAGE_SIZE, "crop")
    assert embedding_store.shard_names(paths.embeddings) == ["features-000001.parquet"]
    assert summary["shard_records"] == {"features-000001.parquet": 3 * PER_CLASS}
    assert embedding_store.read_summary(paths.embeddings) == summary
    table = processed_store.read_table(paths.processed)
    assert set(table["split"]) == {"train", "val", "test"}
    stored = embedding_store.read_features(paths.embeddings, table["sha256"].tolist())
    assert stored.shape == (3 * PER_CLASS, FEATURES)
    # each split row's features are those of its own image
    assert_same_features(stored, keras_features(from_source(config, paths, table["path"].tolist())))


def test_a_rerun_with_nothing_new_computes_nothing(photos, computed):
    config, paths = photos
    prepare(config, paths)
    first = run_embed(config, paths)
    shards = shard_times(paths)
    summary_time = (paths.embeddings / embedding_store.SUMMARY_FILE).stat().st_mtime_ns
    computed.clear()

    prepare(config, paths)
    second = run_embed(config, paths)

    assert computed == []
    assert shard_times(paths) == shards
    assert second == first
    assert (paths.embeddings / embedding_store.SUMMARY_FILE).stat().st_mtime_ns == summary_time


def test_new_images_are_computed_alone_into_a_shard_of_their_own(photos, computed, keras_features):
    config, paths = photos
    prepare(config, paths)
    run_embed(config, paths)
    shards = shard_times(paths)
    computed.clear()

    added = write_photos(paths.resolve(config.ingest.source), per_class=1, first=PER_CLASS)
    prepare(config, paths)
    summary = run_embed(config, paths)

    assert sum(computed) == 3
    assert embedding_store.shard_names(paths.embeddings) == ["features-000001.parquet", "features-000002.parquet"]
    assert {name: time for name, time in shard_times(paths).items() if name in shards} == shards  # untouched
    assert summary["shard_records"] == {"features-000001.parquet": 3 * PER_CLASS, "features-000002.parquet": 3}
    assert summary["images"] == 3 * PER_CLASS + 3
    added_sha256s = sha256s_of(paths, added)
    assert sorted(embedding_store.stored_sha256s(paths.embeddings).get(digest) for digest in added_sha256s) == [
        "features-000002.parquet"] * 3
    # what a fresh store computes for them: Keras's features of the images alone
    assert_same_features(embedding_store.read_features(paths.embeddings, added_sha256s),
                         keras_features(from_source(config, paths, added)))


def test_removed_images_are_compacted_out_of_the_store(photos, computed):
    config, paths = photos
    prepare(config, paths)
    run_embed(config, paths)
    computed.clear()

    source = paths.resolve(config.ingest.source)
    for path in sorted(source.rglob("*_00[0-9].*")) + sorted(source.rglob("*_01[0-2].*")):
        path.unlink()  # 13 of each class's 16
    prepare(config, paths)
    summary = run_embed(config, paths)

    table = processed_store.read_table(paths.processed)
    assert len(table) == 9 and computed == []
    assert set(embedding_store.stored_sha256s(paths.embeddings)) == set(table["sha256"])
    assert embedding_store.shard_names(paths.embeddings) == ["features-000002.parquet"]  # the live rows, copied
    assert summary["images"] == 9 and summary["shard_records"] == {"features-000002.parquet": 9}
    assert embedding_store.read_features(paths.embeddings, table["sha256"].tolist()).shape == (9, FEATURES)


def test_a_settings_change_computes_every_image_again(photos, computed):
    config, paths = photos
    prepare(config, paths)
    run_embed(config, paths)
    table = processed_store.read_table(paths.processed)
    at_64 = embedding_store.read_features(paths.embeddings, table["sha256"].tolist())
    computed.clear()

    smaller = config.model_copy(update={"preprocess": config.preprocess.model_copy(update={"image_size": 48})})
    prepare(smaller, paths)
    summary = run_embed(smaller, paths)

    assert sum(computed) == 3 * PER_CLASS
    assert summary["settings"]["image_size"] == 48 and summary["images"] == 3 * PER_CLASS
    assert summary["shard_records"] == {"features-000001.parquet": 3 * PER_CLASS}
    at_48 = embedding_store.read_features(paths.embeddings, table["sha256"].tolist())
    assert at_48.shape == at_64.shape and not np.allclose(at_48, at_64, atol=1e-2)


def test_scans_use_no_features(shrunk_config):
    """conftest's 20 px images are scans: simple_cnn learns from pixels, so the stage stores nothing."""
    config, paths = shrunk_config
    prepare(config, paths)
    # an earlier run's shard (the folder held photos' features before): removed, no longer any use
    embedding_store.write_shard(paths.embeddings, ["0" * 64], np.zeros((1, 8), dtype=np.float32))

    summary = run_embed(config, paths)

    assert summary["used"] is False and "simple_cnn" in summary["why"]
    assert embedding_store.read_summary(paths.embeddings) == summary
    assert embedding_store.shard_names(paths.embeddings) == []


def test_the_engine_is_chosen_once_per_machine_and_reused(photos, computed, keras_features, monkeypatch):
    config, paths = photos
    config = config.model_copy(update={"embed": config.embed.model_copy(update={"engine": "auto"})})
    monkeypatch.setattr(embed, "SAMPLE", 8)  # the engines compared on 8 images, not 48: the check costs less
    prepare(config, paths)
    first = run_embed(config, paths)["engine"]

    candidates = {(record["engine"], record["precision"]): record for record in first["candidates"]}
    spec = first["spec"]
    assert candidates[spec["engine"], spec["precision"]]["passed"] is True
    fastest = min((record for record in first["candidates"] if record["passed"] and record["ms_per_image"]),
                  key=lambda record: record["ms_per_image"])  # the reference is timed only when chosen
    assert (fastest["engine"], fastest["precision"]) == (spec["engine"], spec["precision"])
    assert candidates["keras", "fp32"]["passed"] is True
    assert spec["backbone"] == BACKBONE and spec["image_size"] == IMAGE_SIZE
    assert {record["images"] for record in first["candidates"] if record["passed"]} == {8}
    assert first["machine"] == sorted(cpu.cpu_flags() & {"avx512_bf16", "amx_bf16", "avx512f", "avx2"})

    def no_second_check(*arguments, **keywords):
        raise AssertionError("the engine was checked again on the same machine")

    monkeypatch.setattr(feature_engine, "choose", no_second_check)
    computed.clear()
    added = write_photos(paths.resolve(config.ingest.source), per_class=1, first=PER_CLASS)
    prepare(config, paths)
    second = run_embed(config, paths)

    assert sum(computed) == 3 and second["engine"] == first
    # the chosen engine's features, stored, are Keras's
    assert_same_features(embedding_store.read_features(paths.embeddings, sha256s_of(paths, added)),
                         keras_features(from_source(config, paths, added)))

    # another kind of CPU (the folder moved to another machine): the engines are checked there again
    summary = json.loads((paths.embeddings / embedding_store.SUMMARY_FILE).read_text())
    summary["engine"]["machine"] = ["another-cpu"]
    (paths.embeddings / embedding_store.SUMMARY_FILE).write_text(json.dumps(summary))
    checked = []

    def keras_only(backbone, image_size, sample, threads=0):
        checked.append(len(sample))
        return EngineSpec(backbone, image_size, "keras", "fp32", None), []

    monkeypatch.setattr(feature_engine, "choose", keras_only)
    write_photos(paths.resolve(config.ingest.source), per_class=1, first=PER_CLASS + 1)
    prepare(config, paths)
    third = run_embed(config, paths)
    assert checked == [3] and third["engine"]["spec"]["engine"] == "keras"
