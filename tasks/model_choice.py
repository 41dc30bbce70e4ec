"""Decides the network that `train.model` stands for (auto: from the images' sizes) and how it learns: a head on a
pretrained backbone's cached features, or a network trained on decoded pixels; reads nothing, writes nothing.

Preprocess makes the choice (it knows the images) and records it in preprocess.json; embed, train and evaluate
read it from there, so every stage of one run works for the same network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tasks.backbones import catalog

SIMPLE_CNN = "simple_cnn"
DEFAULT_BACKBONE = "efficientnet_lite2"
# Under this median short side the images are scans or icons (the built-in digits are 8 px), not photos: ImageNet
# features of them blown up to 260 px lose to a small CNN trained from scratch (benchmarks/BENCHMARKS.md,
# "Pretrained features": the digits' test accuracy 0.96 for a head on EfficientNet-Lite2's features, 0.99 for
# simple_cnn in `make run`).
SCAN_BELOW = 32
# The keras.applications networks that train on pixels (tasks/networks.py builds them) and the size they were made
# for: preprocess.image_size auto takes it, as it takes a pretrained backbone's (the registry: catalog.PIXEL_BACKBONES)
PIXEL_BACKBONE_SIZES = {name: entry.image_size for name, entry in catalog.PIXEL_BACKBONES.items()}
HEAD_ON_FEATURES = "head_on_features"  # a pretrained backbone's features are cached; the head trains on them
PIXELS = "pixels"  # the network trains on decoded images (simple_cnn, keras.applications backbones)


@dataclass(frozen=True)
class Choice:
    model: str
    reason: str
    route: str  # HEAD_ON_FEATURES or PIXELS
    weights_id: str | None = None  # the pretrained weights the features come from (HEAD_ON_FEATURES)

    @property
    def on_features(self) -> bool:
        return self.route == HEAD_ON_FEATURES

    def as_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Any) -> Choice:
        if (not isinstance(record, dict) or record.get("route") not in (HEAD_ON_FEATURES, PIXELS)
                or not isinstance(record.get("model"), str)):
            raise ValueError("preprocess.json records no model choice; run the preprocess stage again "
                             "(dvc repro preprocess)")
        return cls(str(record["model"]), str(record.get("reason", "")), str(record["route"]),
                   record.get("weights_id"))


def _pretrained(model: str, reason: str, weights: str | None) -> Choice:
    if weights not in ("auto", "imagenet"):
        raise ValueError(f"train.model {model} learns from its installed ImageNet weights; set train.weights to auto "
                         f"or imagenet (got {weights!r}), or use simple_cnn for a network from random weights")
    return Choice(model, reason, HEAD_ON_FEATURES, catalog.spec(model).weights_id)


def choose(model: str, weights: str | None, median_short_side: float) -> Choice:
    """The network for `train.model` (and train.weights) given the images' median short side in pixels."""
    if model == "auto":
        if median_short_side < SCAN_BELOW:
            return Choice(SIMPLE_CNN, f"the images' median short side is {median_short_side:g} px, under {SCAN_BELOW}: "
                                      "scans or icons, where a small CNN from scratch beats ImageNet features",
                          PIXELS)
        if weights is None:
            return Choice(SIMPLE_CNN, "train.weights is null: no pretrained weights, so a small CNN from scratch",
                          PIXELS)
        return _pretrained(DEFAULT_BACKBONE, f"photos (median short side {median_short_side:g} px): a head on "
                           f"{DEFAULT_BACKBONE}'s ImageNet features, installed with imgpipe", weights)
    if model in catalog.BACKBONES:
        return _pretrained(model, "train.model", weights)
    return Choice(model, "train.model", PIXELS)


def native_size(choice: Choice) -> int | None:
    """The image size a backbone was made for (preprocess.image_size auto takes it): a pretrained backbone's, or a
    keras.applications network's on pixels, with or without weights; None for simple_cnn."""
    if choice.on_features:
        return catalog.spec(choice.model).image_size
    return PIXEL_BACKBONE_SIZES.get(choice.model)


def resize_mode(choice: Choice) -> str:
    """What preprocess.resize auto stands for: the centre crop for a pretrained backbone (ImageNet networks learnt
    from undistorted crops), stretch for a network trained from scratch (it keeps the whole image)."""
    return "crop" if choice.on_features else "stretch"
