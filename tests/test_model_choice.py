"""What `train.model` stands for: auto picks from the images' median short side; a pretrained backbone needs its
ImageNet weights; the choice survives preprocess.json, and a missing one says to run preprocess again."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import model_choice
from tasks.backbones import catalog

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("median_short_side", [8, 20, 31.9])
def test_auto_takes_the_small_cnn_for_scans_and_icons(median_short_side):
    for weights in ("auto", "imagenet", None):  # a network from scratch needs no weights: none is asked about
        choice = model_choice.choose("auto", weights, median_short_side)
        assert (choice.model, choice.route, choice.weights_id) == ("simple_cnn", model_choice.PIXELS, None)
        assert not choice.on_features
        assert f"{median_short_side:g} px" in choice.reason


@pytest.mark.parametrize("median_short_side", [32, 33, 480])
def test_auto_takes_a_head_on_lite2_features_for_photos(median_short_side):
    choice = model_choice.choose("auto", "auto", median_short_side)
    assert (choice.model, choice.route) == ("efficientnet_lite2", model_choice.HEAD_ON_FEATURES)
    assert choice.on_features
    assert choice.weights_id == catalog.spec("efficientnet_lite2").weights_id
    assert choice.weights_id.startswith("efficientnet_lite2@")
    assert f"{median_short_side:g} px" in choice.reason
    assert model_choice.choose("auto", "imagenet", median_short_side) == choice


@pytest.mark.parametrize("model", ["efficientnet_lite0", "efficientnet_lite2"])
def test_an_explicit_lite_backbone_is_the_features_route_whatever_the_image_size(model):
    for median_short_side in (8, 600):
        for weights in ("auto", "imagenet"):
            choice = model_choice.choose(model, weights, median_short_side)
            assert (choice.model, choice.route) == (model, model_choice.HEAD_ON_FEATURES)
            assert choice.weights_id == catalog.spec(model).weights_id


@pytest.mark.parametrize("weights", [None, "random", "/tmp/notop.weights.h5"])
@pytest.mark.parametrize("model", ["efficientnet_lite0", "efficientnet_lite2"])
def test_a_lite_backbone_without_its_imagenet_weights_is_refused_naming_train_weights(model, weights):
    with pytest.raises(ValueError, match="train.weights") as raised:
        model_choice.choose(model, weights, 224)
    assert model in str(raised.value) and repr(weights) in str(raised.value)


@pytest.mark.parametrize("model", ["simple_cnn", "mobilenet_v3_small", "efficientnet_v2_b0", "resnet50"])
def test_keras_applications_and_the_small_cnn_train_on_pixels(model):
    for weights in ("auto", "imagenet", None):
        for median_short_side in (8, 600):
            choice = model_choice.choose(model, weights, median_short_side)
            assert (choice.model, choice.route, choice.weights_id) == (model, model_choice.PIXELS, None)
            # a keras.applications network is made for 224 px with or without weights (auto takes it); simple_cnn
            # takes the images' own size
            assert model_choice.native_size(choice) == (None if model == "simple_cnn" else 224)
            assert model_choice.resize_mode(choice) == "stretch"


def test_the_pixel_backbones_sizes_name_every_keras_applications_network():
    from tasks import networks

    assert set(model_choice.PIXEL_BACKBONE_SIZES) == set(networks.BACKBONES)


def test_native_size_and_resize_mode_of_a_pretrained_backbone():
    for model, size in (("efficientnet_lite0", 224), ("efficientnet_lite2", 260)):
        choice = model_choice.choose(model, "auto", 100)
        assert model_choice.native_size(choice) == size == catalog.spec(model).image_size
        assert model_choice.resize_mode(choice) == "crop"


@pytest.mark.parametrize("choice", [model_choice.choose("auto", "auto", 16), model_choice.choose("auto", "auto", 300),
                                    model_choice.choose("resnet50", None, 300)])
def test_a_choice_survives_preprocess_json(choice):
    record = json.loads(json.dumps(choice.as_record()))
    assert set(record) == {"model", "reason", "route", "weights_id"}
    assert model_choice.Choice.from_record(record) == choice


@pytest.mark.parametrize("record", [None, {}, [], "efficientnet_lite2", {"model": "simple_cnn"},
                                    {"model": "simple_cnn", "route": "somewhere"}, {"route": "pixels"}])
def test_a_missing_or_garbled_choice_says_to_run_preprocess_again(record):
    with pytest.raises(ValueError, match="preprocess"):
        model_choice.Choice.from_record(record)


def test_choosing_needs_neither_keras_nor_the_network_code():
    """Preprocess settles the network: importing the choice must not start TensorFlow or build backbones."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, tasks.model_choice; print(' '.join(sorted(sys.modules)))"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout.split()
    heavy = [name for name in loaded
             if name.split(".")[0] in ("keras", "tensorflow", "torch", "sklearn")
             or name in ("tasks.backbones.pretrained", "tasks.backbones.efficientnet_lite")]
    assert heavy == []


def test_auto_with_weights_null_trains_the_small_cnn_on_photos_and_says_why():
    choice = model_choice.choose("auto", None, 400)
    assert (choice.model, choice.route) == ("simple_cnn", model_choice.PIXELS)
    assert "train.weights is null" in choice.reason
