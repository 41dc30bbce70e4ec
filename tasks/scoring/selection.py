"""How a training run chooses: the batch size, which epoch to keep, and whether a split can decide; pure, no I/O.

Kept free of Keras and TensorFlow so that the gate can read the same rules without starting either.
"""

from __future__ import annotations

import math
from typing import Any

MIN_STEPS_PER_EPOCH = 20  # `batch_size: auto` gives an epoch at least this many steps when it can
LARGEST_AUTO_BATCH = 64
SMALLEST_AUTO_BATCH = 8
# A split whose 95% interval of the headline metric is wider than this cannot tell two models apart.
WIDEST_DECISIVE_INTERVAL = 0.2
# Under this many images even a perfect score has a 95% (Wilson) interval wider than 0.2, though the bootstrap's
# collapses to a point when every image is right: 1.96^2 / (n + 1.96^2) > 0.2 for n < 16.
FEWEST_DECISIVE_IMAGES = 16


def batch_size(setting: int | str, train_images: int, replicas: int = 1) -> int:
    """The batch size per replica: the params value, or for `auto` the largest power of two from 64 down to 8
    that still gives an epoch at least MIN_STEPS_PER_EPOCH steps (8 when even that gives fewer)."""
    if setting != "auto":
        return int(setting)
    size = LARGEST_AUTO_BATCH
    while size > SMALLEST_AUTO_BATCH and math.ceil(train_images / (size * replicas)) < MIN_STEPS_PER_EPOCH:
        size //= 2
    return size


def score_key(select_on: str, logs: dict[str, Any]) -> tuple[float, float]:
    """What makes an epoch better, larger is better: the validation score, then a lower val_loss breaking ties.

    `select_on: loss` is val_loss alone. A model that predicts one class for every image has a low macro-F1
    whatever its loss, so selecting on macro-F1 (the default) never keeps the untrained first epoch on a small
    validation split whose val_loss happened to be lowest there.
    """
    loss = float(logs.get("val_loss", math.inf))
    loss = loss if math.isfinite(loss) else math.inf
    if select_on == "loss":
        return (-loss, 0.0)
    score = float(logs.get(f"val_{select_on}", -math.inf))
    return (score if math.isfinite(score) else -math.inf, -loss)


def best_row(history: Any, select_on: str) -> int:
    """The position of the best epoch in a history table (columns val_loss, val_<select_on>; earliest on ties)."""
    keys = [score_key(select_on, row) for row in history.to_dict("records")]
    return max(range(len(keys)), key=lambda index: (keys[index], -index))


def interval_note(split: str, metric: str, interval: list[float] | tuple[float, float], images: int) -> str | None:
    """A sentence when a split's 95% interval of `metric` is too wide to decide anything; None when it is not."""
    low, high = float(interval[0]), float(interval[1])
    width = high - low
    advice = f"add images, or a larger preprocess.{'val' if split == 'validation' else 'test'}_fraction"
    if images < FEWEST_DECISIVE_IMAGES:
        return (f"the {split} split is too small for a decision: {images} images cannot give {metric} a 95% "
                f"interval narrower than {WIDEST_DECISIVE_INTERVAL} (the bootstrap's is {low:.2f}-{high:.2f}); "
                f"{advice}")
    if not math.isfinite(width) or width <= WIDEST_DECISIVE_INTERVAL:
        return None
    return (f"the {split} split is too small for a decision: {metric} has a 95% interval of {low:.2f}-{high:.2f} "
            f"({width:.2f} wide, more than {WIDEST_DECISIVE_INTERVAL}) on {images} images; {advice}")
