"""Draws the tuning pictures: the objective against each swept key, and the loss against the learning rate (PNGs)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # the object API draws with Agg and touches no global pyplot state

from tasks import atomic

DPI = 110
PANEL_COLUMNS = 3


def save(figure: Figure, path: Path) -> None:
    with atomic.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI, bbox_inches="tight")


def _numeric(values: pd.Series) -> bool:
    present = values.dropna()
    return len(present) > 0 and all(isinstance(value, int | float) and not isinstance(value, bool)
                                    for value in present)


def _where(values: pd.Series, positions: dict[str, int] | None) -> list:
    """x positions: the values themselves for a numeric key, else each category's place."""
    return list(values) if positions is None else [positions[str(value)] for value in values]


def objective_plot(frame: pd.DataFrame, keys: list[str], log_keys: set[str], objective: str, path: Path) -> None:
    """One panel per swept key: each finished trial's objective against its value; the best trial starred."""
    rows = math.ceil(len(keys) / PANEL_COLUMNS)
    columns = min(len(keys), PANEL_COLUMNS)
    figure = Figure(figsize=(4.2 * columns, 3.4 * rows))
    done = frame[frame["status"] == "done"]
    stopped = frame[frame["status"] == "stopped"]
    best = done[done["rank"] == 1]
    for index, key in enumerate(keys):
        axes = figure.add_subplot(rows, columns, index + 1)
        numeric = _numeric(frame[key])
        positions = None
        if not numeric:  # categories in the order the plan met them
            positions = {value: place for place, value in enumerate(dict.fromkeys(map(str, frame[key].dropna())))}
            axes.set_xticks(list(positions.values()), list(positions), rotation=20)
        axes.scatter(_where(done[key], positions), done["objective"], color="#4c72b0", label="finished", zorder=2)
        if len(stopped):
            score = "val_loss" if objective.endswith("loss") else "val_accuracy"
            axes.scatter(_where(stopped[key], positions), stopped[score], marker="x", color="#999999",
                         label="stopped early", zorder=2)
        if len(best):
            axes.scatter(_where(best[key], positions), best["objective"], marker="*", s=220, color="#dd8452",
                         label="best", zorder=3)
        present = frame[key].dropna()
        if numeric and (key in log_keys or (present.min() > 0 and present.max() >= 100 * present.min())):
            axes.set_xscale("log")  # a log range, or values that span two decades or more
        axes.set_xlabel(key)
        axes.set_ylabel(f"{objective} (validation)")
        axes.grid(alpha=0.3)
        if index == 0:
            axes.legend(fontsize=8)
    figure.suptitle(f"{len(done)} finished trials of {len(frame)}: {objective} against each swept key")
    save(figure, path)


def learning_rate_plot(rates: np.ndarray, losses: np.ndarray, smoothed: np.ndarray, suggested: float,
                       path: Path) -> None:
    """Training loss against the learning rate (log scale), with the suggested rate marked."""
    figure = Figure(figsize=(7, 4.2))
    axes = figure.add_subplot()
    axes.plot(rates, losses, color="#bbbbbb", linewidth=1, label="loss per batch")
    axes.plot(rates, smoothed, color="#4c72b0", linewidth=2, label="smoothed")
    axes.axvline(suggested, color="#dd8452", linestyle="--", label=f"suggested train.learning_rate {suggested:.2g}")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    finite = losses[np.isfinite(losses)]
    if len(finite) > 1:  # keep the divergence at the end from flattening the interesting part
        low = float(min(np.nanmin(smoothed), np.percentile(finite, 1)))
        high = float(np.percentile(finite[: max(2, len(finite) // 2)], 99))
        margin = 0.1 * max(high - low, 1e-6)
        axes.set_ylim(low - margin, high + margin)
    axes.grid(alpha=0.3, which="both")
    axes.legend()
    axes.set_title("learning-rate range test")
    save(figure, path)
