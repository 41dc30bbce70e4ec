"""The features the health checks compare images by: reads data/embeddings/ (the cached backbone features), or, when
the embed stage stored none (a network trained on pixels), the images from data/raw/ at a few pixels; writes nothing.

The stand-in (each image decoded at STAND_IN_SIDE px, stretched, its pixels standardised) costs a decode of every
image on every run and separates classes far less well than a backbone's features; summary.json says which was used.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from tasks import embedding_store, stored_images
from tasks.paths import Paths

logger = logging.getLogger(__name__)

STAND_IN_SIDE = 16  # pixels per side of the stand-in: 768 values per image


def normalised(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32), so that a dot product is the cosine similarity."""
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def stand_in(paths: Paths, names: list[str], max_pixels: int) -> np.ndarray:
    """Each image's pixels at STAND_IN_SIDE px, centred and scaled per feature (float32)."""
    decoder = stored_images.Decoder(paths.raw, STAND_IN_SIDE, "stretch", max_pixels)
    pixels = np.stack([decoder(job).reshape(-1) for job in stored_images.jobs_for(paths.manifest, names)])
    pixels = pixels.astype(np.float32)
    return (pixels - pixels.mean(axis=0)) / np.maximum(pixels.std(axis=0), 1.0)


def load(paths: Paths, names: list[str], sha256s: list[str], max_pixels: int) -> tuple[np.ndarray, str]:
    """(features in the order given, what they are: the backbone's name, or a stand-in's description)."""
    summary = embedding_store.read_summary(paths.embeddings)
    if summary.get("used"):
        return embedding_store.read_features(paths.embeddings, sha256s), f"{summary.get('backbone')} features"
    logger.info("health: the embed stage stored no features (%s); comparing images by their pixels at %d px instead",
                summary.get("why", "no embeddings.json"), STAND_IN_SIDE)
    return stand_in(paths, names, max_pixels), f"stand-in: pixels at {STAND_IN_SIDE} px, standardised"


def identity(paths: Paths, kind: str) -> str:
    """What makes the features of two runs comparable: what they are (`kind`, from load) and, for a backbone's, the
    settings the embed stage computed them under (weights, image size, resize, decoder)."""
    settings = embedding_store.read_summary(paths.embeddings).get("settings") if not kind.startswith("stand-in") \
        else None
    return f"{kind} {json.dumps(settings, sort_keys=True)}" if settings else kind
