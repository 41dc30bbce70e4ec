"""The pretrained route's training: which challengers are tried against the head, the record of earlier trials, and
the head joined to its backbone into one Keras model."""

import json
import os

import numpy as np
import pandas as pd
import pydantic
import pytest

from tasks.params import FineTuneParams
from tasks.train import head, transfer

AUTO = FineTuneParams()  # when: auto, min_images_per_class: 50
ROOMY = 0.9  # a head score that leaves a challenger room to win
BOTH = [transfer.SCRATCH, transfer.FINE_TUNE]


def earlier(train_images: int, winner: str) -> dict:
    return {"train_images": train_images, "winner": winner,
            "scores": {transfer.HEAD: 0.90, transfer.SCRATCH: 0.95 if winner == transfer.SCRATCH else 0.80}}


def test_never_and_always_override_every_other_rule():
    never = FineTuneParams.model_validate("never")
    assert never == FineTuneParams(when="never")
    assert transfer.decide(never, ROOMY, 10_000, 2, earlier(100, transfer.SCRATCH)) == (
        [], "train.fine_tune.when: never")
    always = FineTuneParams.model_validate("always")
    assert transfer.decide(always, 1.0, 3, 2, earlier(10_000, transfer.HEAD)) == (
        [transfer.FINE_TUNE], "train.fine_tune.when: always")
    with pytest.raises(pydantic.ValidationError):
        FineTuneParams.model_validate("sometimes")


@pytest.mark.parametrize("head_score", [0.99, 0.995, 1.0])
def test_a_head_at_099_or_more_leaves_nothing_to_win(head_score):
    challengers, reason = transfer.decide(AUTO, head_score, 10_000, 2, None)
    assert challengers == [] and "nothing to win" in reason and f"{head_score:.3f}" in reason
    assert transfer.decide(AUTO, 0.989, 10_000, 2, None)[0] == BOTH


def test_too_few_images_per_class_keep_the_head_alone():
    params = FineTuneParams(min_images_per_class=50)
    challengers, reason = transfer.decide(params, ROOMY, 149, 3, None)  # 49.7 per class
    assert challengers == [] and "train.fine_tune.min_images_per_class (50)" in reason
    assert transfer.decide(params, ROOMY, 150, 3, None)[0] == BOTH
    assert transfer.decide(FineTuneParams(min_images_per_class=100), ROOMY, 150, 3, None)[0] == []


def test_a_trial_the_head_won_is_tried_again_after_25_percent_growth():
    record = earlier(200, transfer.HEAD)
    challengers, reason = transfer.decide(AUTO, ROOMY, 249, 2, record)
    assert challengers == [] and "200 training images" in reason and "25%" in reason
    assert transfer.decide(AUTO, ROOMY, 250, 2, record)[0] == BOTH
    assert transfer.decide(AUTO, ROOMY, 200, 2, None)[0] == BOTH  # no earlier trial: both are tried


def test_a_challenger_that_won_is_trained_again_alone():
    record = earlier(200, transfer.SCRATCH)
    challengers, reason = transfer.decide(AUTO, ROOMY, 210, 2, record)
    assert challengers == [transfer.SCRATCH] and "simple_cnn 0.950" in reason and "head 0.900" in reason
    assert transfer.decide(AUTO, ROOMY, 400, 2, record)[0] == BOTH  # grown by a quarter: both again
    assert transfer.decide(AUTO, 0.995, 210, 2, record)[0] == []  # the head has caught up: nothing to win now


def test_trial_keys_differ_with_what_a_trial_depends_on():
    key = transfer.trial_key("efficientnet_lite0@579344248a93/v1", 224, "crop", ["cat", "dog"])
    assert len(key) == 16 and key == transfer.trial_key("efficientnet_lite0@579344248a93/v1", 224, "crop",
                                                        ["cat", "dog"])
    others = {transfer.trial_key("efficientnet_lite2@9656183eaeaf/v1", 224, "crop", ["cat", "dog"]),
              transfer.trial_key("efficientnet_lite0@579344248a93/v1", 260, "crop", ["cat", "dog"]),
              transfer.trial_key("efficientnet_lite0@579344248a93/v1", 224, "stretch", ["cat", "dog"]),
              transfer.trial_key("efficientnet_lite0@579344248a93/v1", 224, "crop", ["dog", "cat"]),
              transfer.trial_key("efficientnet_lite0@579344248a93/v1", 224, "crop", ["cat", "dog", "fox"])}
    assert key not in others and len(others) == 5


def test_trials_round_trip_and_an_unreadable_record_reads_as_empty(tmp_path):
    models = tmp_path / "models"
    assert transfer.read_trials(models) == {}
    transfer.record_trial(models, "a" * 16, earlier(200, transfer.SCRATCH))
    transfer.record_trial(models, "b" * 16, earlier(80, transfer.HEAD))
    transfer.record_trial(models, "a" * 16, earlier(300, transfer.HEAD))  # a key recorded again is replaced
    assert transfer.read_trials(models) == {"a" * 16: earlier(300, transfer.HEAD), "b" * 16: earlier(80, transfer.HEAD)}
    assert [name for name in os.listdir(models) if name != transfer.TRIALS_FILE] == []  # no temporary left

    for garbled in ("{not json", "[1, 2]", ""):
        (models / transfer.TRIALS_FILE).write_text(garbled)
        assert transfer.read_trials(models) == {}
    transfer.record_trial(models, "c" * 16, earlier(50, transfer.HEAD))  # a garbled record is written over
    assert json.loads((models / transfer.TRIALS_FILE).read_text()) == {"c" * 16: earlier(50, transfer.HEAD)}


IMAGE_SIZE = 32  # the smallest sensible size: EfficientNet-Lite0 at 32 px builds and runs in a second or two


@pytest.fixture(scope="module")
def backbone():
    """EfficientNet-Lite0's features model at IMAGE_SIZE (its weights converted into the session's cache)."""
    from tasks.backbones import pretrained

    return pretrained.features_model("efficientnet_lite0", IMAGE_SIZE)


def random_head(classes: int, multi_label: bool, seed: int = 0) -> head.Head:
    generator = np.random.default_rng(seed)
    # features at 32 px spread by about 0.05: a kernel of this size gives logits a few units apart
    return head.Head(generator.normal(0, 1.0, (1280, classes)), generator.normal(0, 1.0, classes), multi_label,
                     pd.DataFrame(), pd.Series(dtype=object))


@pytest.mark.parametrize(("classes", "multi_label"), [(3, False), (4, True)])
def test_the_full_model_is_the_backbone_then_the_head(backbone, classes, multi_label):
    from tasks import networks

    fitted = random_head(classes, multi_label)
    network = transfer.full_model("efficientnet_lite0", IMAGE_SIZE, fitted, dropout=0.5)
    assert network.inputs[0].dtype == "uint8"
    assert tuple(network.inputs[0].shape) == (None, IMAGE_SIZE, IMAGE_SIZE, 3)
    nested = networks.find_backbone(network)
    assert nested is not None and nested.name == "efficientnet_lite0"
    assert network.get_layer("probabilities").activation.__name__ == ("sigmoid" if multi_label else "softmax")

    images = np.random.default_rng(1).integers(0, 256, (4, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    probabilities = np.asarray(network(images, training=False))
    expected = fitted.probabilities(np.asarray(backbone(images.astype(np.float32))))
    assert probabilities.shape == (4, classes)
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    assert np.ptp(expected, axis=0).max() > 0.05  # the images are told apart: the check is not of a constant
    if not multi_label:
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
