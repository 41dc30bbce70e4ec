"""Training features: backbones, transfer learning, resumable runs, determinism, the model card, other Keras
backends (the exports are the export stage's: tests/export/)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import yaml

from tasks import model_folder, networks
from tasks.ingest import stage as ingest
from tasks.params import TrainParams
from tasks.preprocess import stage as preprocess
from tasks.train import stage as train
from tests.conftest import PROJECT_ROOT


@pytest.fixture
def prepared(shrunk_config, tmp_path, monkeypatch):
    """Tiny data ingested and preprocessed at 32 px (the backbones' minimum), in tmp_path."""
    monkeypatch.chdir(tmp_path)
    config, paths = shrunk_config
    config = config.model_copy(update={"preprocess": config.preprocess.model_copy(update={"image_size": 32})})
    ingest.run(config.ingest, paths)
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths)
    return config, paths


def settle_network(config, paths, params: TrainParams) -> None:
    """Preprocess again for `params` (as DVC does when train.model changes): it settles the network train runs."""
    preprocess.run(config.preprocess, config.base.seed, config.ingest.max_pixels, paths, params.model, params.weights)


def test_train_refuses_a_network_preprocess_did_not_settle(prepared):
    config, paths = prepared
    params = TrainParams(model="mobilenet_v3_small", epochs=1)
    with pytest.raises(ValueError, match="preprocess settled the network for train.model auto.*dvc repro preprocess"):
        train.run(params, config.preprocess.augment, config.base.seed, paths)


def test_transfer_learning_from_a_local_weights_file_runs_both_phases(prepared, tmp_path):
    config, paths = prepared
    backbone = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3),
                                                   pooling="avg")
    weights_file = tmp_path / "mobilenet_notop.weights.h5"
    backbone.save_weights(weights_file)
    params = TrainParams(model="mobilenet_v3_small", weights=str(weights_file), epochs=1, batch_size=8,
                         fine_tune={"epochs": 1, "unfreeze_layers": 5, "learning_rate": 1e-4})
    settle_network(config, paths, params)
    candidate = train.run(params, config.preprocess.augment, config.base.seed, paths)
    history = (candidate / "history.csv").read_text()
    assert "train" in history and "fine_tune" in history
    loaded = keras.saving.load_model(candidate / "model.keras", safe_mode=True)
    first_kernel = next(w for w in networks.find_backbone(loaded).weights if "kernel" in w.path)
    assert first_kernel.shape == next(w for w in backbone.weights if "kernel" in w.path).shape


OFFLINE = Exception("URL fetch failure on https://storage.googleapis.com/x_no_top.h5: None -- [Errno -3] Temporary "
                    "failure in name resolution")  # what Keras raises when it cannot download


def _stand_in_download(monkeypatch, weights_file):
    """Keras's download replaced: `imagenet` gets `weights_file` from the "cache"; nothing touches the network."""
    from keras.src.utils import file_utils

    monkeypatch.setattr(file_utils, "get_file", lambda *arguments, **options: str(weights_file))


def test_imagenet_weights_offline_say_how_to_fetch_them_elsewhere(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*arguments, **options):
        raise OFFLINE

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(ValueError, match=r"train.weights: imagenet: .*could not be downloaded.*'imgpipe weights fetch "
                                         r"mobilenet_v3_small' \(it writes mobilenet_v3_small_imagenet_notop.weights.h5\).*"
                                         r"set train.weights to its path"):
        networks.build(TrainParams(model="mobilenet_v3_small", weights="imagenet"), 32, 3)


def test_weights_fetch_saves_a_no_top_file_that_training_loads(prepared, tmp_path, monkeypatch, capsys):
    from flows.cli import main

    config, paths = prepared
    random_backbone = keras.applications.MobileNetV3Small(include_top=False, weights=None, pooling="avg")
    downloaded = tmp_path / "downloaded.weights.h5"
    random_backbone.save_weights(downloaded)
    _stand_in_download(monkeypatch, downloaded)
    out = tmp_path / "fetched" / "mobilenet_notop.weights.h5"
    assert main(["weights", "fetch", "mobilenet_v3_small", "--out", str(out)]) == 0
    assert "set train.weights" in capsys.readouterr().out and out.is_file()
    assert not list(out.parent.glob(".*partial*"))
    assert main(["weights", "fetch", "mobilenet_v3_small", "--out", str(tmp_path / "x.h5")]) == 1
    assert "--out" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # without --out: the name the offline message gives, in the current folder
    assert main(["weights", "fetch", "mobilenet_v3_small"]) == 0
    assert (tmp_path / "mobilenet_v3_small_imagenet_notop.weights.h5").is_file()

    # imagenet (from the stand-in cache) and the fetched file give the same starting weights
    from_cache = networks.build(TrainParams(model="mobilenet_v3_small", weights="imagenet"), 32, 3)
    from_file = networks.build(TrainParams(model="mobilenet_v3_small", weights=str(out)), 32, 3)
    cached, fetched = (networks.find_backbone(network).get_weights() for network in (from_cache, from_file))
    for first, second in zip(cached, fetched):
        np.testing.assert_array_equal(first, second)
    params = TrainParams(model="mobilenet_v3_small", weights="imagenet", epochs=1, batch_size=8)
    settle_network(config, paths, params)
    candidate = train.run(params, config.preprocess.augment, config.base.seed, paths)
    card = json.loads((candidate / "model_card.json").read_text())
    assert card["params"]["train"]["weights"] == "imagenet"


TRAIN_DETERMINISTICALLY = """
import sys
from pathlib import Path
from tasks.config import load_config
from tasks.paths import Paths
from tasks.train import stage as train
config, _ = load_config(Path(sys.argv[1]))
train.run(config.train.model_copy(update={"deterministic": True, "epochs": 2}), config.preprocess.augment,
          config.base.seed, Paths(config.paths, Path(sys.argv[2])))
"""


def test_deterministic_runs_give_identical_weights(prepared, tmp_path):
    """Each run in a process of its own, as DVC runs the stage: Keras draws its initial weights' seeds from Python's
    global `random`, which threads that other tests leave in this process (a Prefect server's) also draw from."""
    config, paths = prepared
    settings = tmp_path / "deterministic.yaml"
    settings.write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False))
    weights = []
    for _ in range(2):
        subprocess.run([sys.executable, "-c", TRAIN_DETERMINISTICALLY, str(settings), str(paths.root)], check=True,
                       cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)), capture_output=True)
        model = keras.saving.load_model(paths.candidate / "model.keras")
        weights.append([np.array(w) for w in model.get_weights()])
    for first, second in zip(*weights):
        np.testing.assert_array_equal(first, second)


def test_model_card_written_and_no_exports(prepared):
    config, paths = prepared
    candidate = train.run(config.train, config.preprocess.augment, config.base.seed, paths)
    card = json.loads((candidate / "model_card.json").read_text())
    assert card["data_sha256"] and card["git_revision"] and card["image_size"] == 32
    assert card["params"]["train"]["epochs"] == config.train.epochs and "val_accuracy" in card["validation"]
    assert card["batch_size"] == 8
    assert card["validation"]["selected_on"] == "macro_f1" and len(card["validation"]["interval"]) == 2
    assert "too small for a decision" in card["validation"]["note"]  # 6 validation images
    # a user without imgpipe loads model.keras: no custom metric or optimizer state in it
    code = ("import keras, sys; model = keras.saving.load_model(sys.argv[1]); "
            "print(getattr(model, 'optimizer', None), [m.name for m in model.metrics])")
    loaded = subprocess.run([sys.executable, "-c", code, str(candidate / "model.keras")], capture_output=True,
                            text=True, timeout=300)
    assert loaded.returncode == 0 and "macro_f1" not in loaded.stdout, loaded.stderr[-2000:]
    assert "Skipping variable loading" not in loaded.stderr and "compile" not in loaded.stderr, loaded.stderr[-2000:]
    # the exports and engines.json are the export stage's (tests/export/test_stage.py): none here, and the
    # checksums train records are complete
    assert "exports" not in card and not (candidate / model_folder.ENGINES_FILE).exists()
    assert not any(model_folder.export_path(candidate, name).exists() for name in (*model_folder.EXPORT_PATHS, "int8"))
    assert json.loads((candidate / "checksums.json").read_text())["complete"]


EPOCH_LINE = re.compile(r"train epoch (\d+):")


def _write_project(paths, config, epochs: int) -> None:
    values = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    values["train"].update({"epochs": epochs, "patience": epochs, "batch_size": 4, "width": 4, "depth": 2})
    values["preprocess"]["image_size"] = config.preprocess.image_size
    (paths.root / "params.yaml").write_text(yaml.safe_dump(values))


def test_training_killed_mid_run_resumes_from_its_last_epoch(prepared):
    config, paths = prepared
    _write_project(paths, config, epochs=12)
    environment = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "tasks.train"]
    log_file = paths.root / "first.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(command, cwd=paths.root, env=environment, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 240
        while "train epoch 3:" not in log_file.read_text() and time.time() < deadline and process.poll() is None:
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait()
    first = log_file.read_text()
    assert "train epoch 3:" in first, first[-3000:]
    completed = max(int(number) for number in EPOCH_LINE.findall(first))
    assert not (paths.candidate / "model.keras").exists()
    # the worst moment to die: halfway through writing the latest backup (the previous copy must take over)
    latest = next((paths.models / ".runs").glob("*/train.backup/latest.weights.h5"))
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])

    second = subprocess.run(command, cwd=paths.root, env=environment, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    output = second.stdout + second.stderr
    assert "resuming an interrupted run" in output
    epochs_seen = [int(number) for number in EPOCH_LINE.findall(output)]
    # resumes from the last whole backup: the last finished epoch, or the one before when its copy was cut short
    assert completed - 1 <= epochs_seen[0] <= completed + 1, (completed, epochs_seen[:3])
    history = (paths.candidate / "history.csv").read_text().splitlines()
    assert len(history) - 1 == 12  # every epoch exactly once, across the interruption


@pytest.mark.parametrize("mixing", ["mixup", "cutmix"])
def test_training_with_mixing_uses_soft_labels_end_to_end(prepared, mixing):
    config, paths = prepared
    augment = config.preprocess.augment.model_copy(update={mixing: 0.4})
    candidate = train.run(config.train.model_copy(update={"epochs": 1}), augment, config.base.seed, paths)
    history = (candidate / "history.csv").read_text()
    assert "val_accuracy" in history
    assert (paths.reports / "augmentation_preview.png").is_file()
