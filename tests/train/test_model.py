"""The model builders: every backbone and simple_cnn, uint8 input, weights files, every installed Keras backend."""

import importlib.util
import os
import subprocess
import sys
from typing import get_args

import numpy as np
import pytest

from tasks import networks
from tasks.backbones import catalog
from tasks.params import ModelName, TrainParams
from tests.conftest import PROJECT_ROOT


def test_the_builders_cover_exactly_the_model_names_params_accept():
    # auto is settled by tasks/model_choice.py; the installed backbones are built by tasks/backbones/
    assert set(get_args(ModelName)) == {"auto", networks.SIMPLE_CNN, *networks.BACKBONES, *catalog.BACKBONES}
    assert networks.MODEL_NAMES == get_args(ModelName)


@pytest.mark.parametrize("name", sorted(catalog.BACKBONES))
def test_weights_fetch_says_the_installed_backbones_need_nothing(name, tmp_path):
    with pytest.raises(ValueError, match="install with imgpipe"):
        networks.fetch_weights(name, tmp_path / "x.weights.h5")


def test_simple_cnn_rescales_inside_and_grows_with_depth():
    shallow, deep = (networks.build(TrainParams(model="simple_cnn", depth=depth, width=4), 32, 5) for depth in (1, 3))
    assert shallow.input.dtype == "uint8" and shallow.output_shape == (None, 5)
    assert any(layer.name == "rescale" for layer in shallow.layers)
    assert deep.count_params() > shallow.count_params()
    probabilities = deep.predict(np.zeros((2, 32, 32, 3), dtype=np.uint8), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_backbones_can_be_frozen_and_partly_unfrozen():
    network = networks.build(TrainParams(model="mobilenet_v3_small"), 32, 3)
    backbone = networks.find_backbone(network)
    networks.set_backbone_trainable(network, 0)
    assert not backbone.trainable and not backbone.trainable_weights
    networks.set_backbone_trainable(network, 5)
    trainable = [layer for layer in backbone.layers if layer.trainable and layer.weights]
    assert trainable and all(layer in backbone.layers[-5:] for layer in trainable)
    assert networks.find_backbone(networks.build(TrainParams(model="simple_cnn", width=4, depth=1), 16, 3)) is None


@pytest.mark.parametrize("name", sorted(networks.BACKBONES))
def test_each_backbone_builds_and_fits_a_batch_with_uint8_input(name):
    params = TrainParams(model=name, dropout=0.1)
    network = networks.build(params, 32, 3)
    network.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    loss = network.train_on_batch(images, np.array([0, 1, 2, 0]))
    assert np.isfinite(loss)
    assert network.predict(images, verbose=0).shape == (4, 3)


def test_a_missing_weights_file_is_a_clear_error(tmp_path):
    params = TrainParams(model="mobilenet_v3_small", weights=str(tmp_path / "nope.weights.h5"))
    with pytest.raises(ValueError, match="train.weights: .*nope.weights.h5 not found.*imgpipe weights fetch"):
        networks.build(params, 32, 3)
    with pytest.raises(ValueError, match="backbones only"):
        networks.build(TrainParams(model="simple_cnn", weights="x.h5"), 32, 3)


BACKEND_SCRIPT = """
import numpy as np, keras
from tasks.params import TrainParams
from tasks import networks
network = networks.build(TrainParams(model="simple_cnn", width=4, depth=2), 16, 3)
network.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
images = np.random.default_rng(0).integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
network.fit(images, np.array([0, 1, 2, 0, 1, 2]), epochs=1, batch_size=3, verbose=0)
assert network.predict(images, verbose=0).shape == (6, 3)
print("ok", keras.backend.backend())
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_the_model_builds_and_fits_under_each_installed_backend(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    environment = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(PROJECT_ROOT))
    result = subprocess.run([sys.executable, "-c", BACKEND_SCRIPT], env=environment, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ok {backend}" in result.stdout
