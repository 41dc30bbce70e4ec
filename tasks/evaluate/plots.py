"""Draws the evaluation pictures: takes arrays and tables, writes PNGs (confusion matrix or per-label outcomes, curves,
bars, gallery)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # the object API draws with Agg and touches no global pyplot state

from tasks import atomic
from tasks.evaluate import confusion

logger = logging.getLogger(__name__)

DPI = 110
MAX_ANNOTATED_CLASSES = 30  # above this, numbers in confusion-matrix cells become unreadable
MAX_TICK_LABELLED_CLASSES = 80
MAX_DRAWN_CLASSES = 50  # a confusion matrix draws at most this many classes: the most confused ones
MAX_BAR_CLASSES = 50  # above this, per_class_bars shows the classes with the lowest F1
PHASE_ORDER = ("head", "train", "simple_cnn", "fine_tune")  # a pretrained route's head, then its challengers
THUMBNAIL_SIDE = 128
GALLERY_COLUMNS = 6
METRIC_COLOURS = {"precision": "#4c72b0", "recall": "#dd8452", "f1": "#55a868"}


def _save(figure: Figure, path: Path) -> None:
    with atomic.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI, bbox_inches="tight")
    logger.debug("wrote %s", path)


def _literal(text: object) -> str:
    """Text as matplotlib should print it: a class name such as "$5 $10" must not turn into mathtext."""
    return str(text).replace("$", r"\$")


def _message_figure(title: str, message: str) -> Figure:
    """A small picture that says why there is nothing to draw, so a report never shows a broken image."""
    figure = Figure(figsize=(6, 2.2))
    axes = figure.add_subplot()
    axes.set_axis_off()
    axes.set_title(title)
    axes.text(0.5, 0.45, message, ha="center", va="center", fontsize=12, color="#555555",
              transform=axes.transAxes)
    return figure


def confusion_matrix(matrix: np.ndarray, labels: list[str], path: Path, normalised: bool,
                     of_classes: int | None = None, row_totals: np.ndarray | None = None) -> None:
    """Save a confusion matrix (rows: actual class, columns: predicted) as a PNG.

    `normalised` divides each row by its total (`row_totals` when the matrix is a part of a larger one: every image
    of the class), so a cell reads as the share of that actual class; otherwise cells show image counts. A class
    with no test images has an all-zero row either way. At most MAX_DRAWN_CLASSES classes are drawn, the most
    confused ones; `of_classes` says how many the whole matrix has when `matrix` is already such a part.
    """
    matrix = np.asarray(matrix)
    count = len(labels)
    if matrix.shape != (count, count):
        raise ValueError(f"confusion matrix of shape {matrix.shape} does not match {count} labels")
    totals = matrix.sum(axis=1, keepdims=True) if row_totals is None else np.asarray(row_totals).reshape(-1, 1)
    if count > MAX_DRAWN_CLASSES:  # a picture of thousands of classes is unreadable and takes gigabytes to draw
        errors = matrix.sum(axis=0) + matrix.sum(axis=1) - 2 * np.diagonal(matrix)
        drawn = confusion.most_confused(errors, MAX_DRAWN_CLASSES)
        matrix, totals, labels = matrix[np.ix_(drawn, drawn)], totals[drawn], [labels[index] for index in drawn]
        of_classes, count = of_classes or count, len(drawn)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    values = shares if normalised else matrix
    top = 1.0 if normalised else max(1, int(matrix.max(initial=0)))

    side = min(24.0, max(4.5, 0.5 * count + 2))
    figure = Figure(figsize=(side + 1.2, side))
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="Blues", vmin=0, vmax=top, interpolation="nearest")
    if count <= MAX_TICK_LABELLED_CLASSES:
        tick_size = 9 if count <= 20 else 7 if count <= 40 else 5
        tick_labels = [_literal(label) for label in labels]
        axes.set_xticks(range(count), tick_labels, rotation=45, ha="right", fontsize=tick_size)
        axes.set_yticks(range(count), tick_labels, fontsize=tick_size)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("actual class")
    kind = "share of each actual class" if normalised else "image counts"
    if of_classes is not None and of_classes > count:
        axes.set_title(f"Confusion matrix, {kind}: the {count} most confused of {of_classes} classes (test split; "
                       f"every count in confusion_matrix.csv)", fontsize=10)
    else:
        axes.set_title(f"Confusion matrix, {kind} (test split, {int(matrix.sum())} images)")
    if count <= MAX_ANNOTATED_CLASSES:
        font_size = 9 if count <= 12 else 7
        for row in range(count):
            for column in range(count):
                value = values[row, column]
                if value == 0 and count > 12:  # in a large matrix the few non-zero cells are what matter
                    continue
                text = "0" if value == 0 else f"{value:.2f}" if normalised else str(int(value))
                axes.text(column, row, text, ha="center", va="center", fontsize=font_size,
                          color="white" if value > 0.55 * top else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04,
                    label="share of actual class" if normalised else "images")
    _save(figure, path)


OUTCOMES = (("true_positives", "true positives"), ("false_negatives", "false negatives"),
            ("false_positives", "false positives"), ("true_negatives", "true negatives"))


def label_outcomes(outcomes: pd.DataFrame, path: Path, normalised: bool) -> None:
    """Save a multi-label model's per-label outcomes (its stand-in for a confusion matrix) as a PNG: one row per
    label, columns true positives, false negatives, false positives, true negatives.

    `outcomes` has a `label` column and one column per outcome (multilabel.outcome_counts). `normalised` shows
    true positives and false negatives as shares of the images that have the label (recall, miss rate), false
    positives and true negatives as shares of those that have not (false positive rate, specificity).
    """
    title_part = ""
    if len(outcomes) > MAX_DRAWN_CLASSES:  # one row per label: thousands would make a picture metres high
        errors = (outcomes["false_negatives"] + outcomes["false_positives"]).to_numpy()
        drawn = confusion.most_confused(errors, MAX_DRAWN_CLASSES)
        title_part = f": the {len(drawn)} labels with the most mistakes of {len(outcomes)}"
        outcomes = outcomes.iloc[drawn]
    labels = outcomes["label"].astype(str).tolist()
    counts = outcomes[[name for name, _ in OUTCOMES]].to_numpy(dtype=float)
    positives = counts[:, :2].sum(axis=1, keepdims=True)
    negatives = counts[:, 2:].sum(axis=1, keepdims=True)
    totals = np.hstack([positives, positives, negatives, negatives])
    values = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0) if normalised else counts
    top = 1.0 if normalised else max(1.0, float(counts.max(initial=0)))
    figure = Figure(figsize=(7.5, max(2.5, 0.45 * len(labels) + 1.5)))
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="Blues", vmin=0, vmax=top, interpolation="nearest", aspect="auto")
    axes.set_xticks(range(len(OUTCOMES)), [title for _, title in OUTCOMES], rotation=20, ha="right", fontsize=9)
    if len(labels) <= MAX_TICK_LABELLED_CLASSES:
        axes.set_yticks(range(len(labels)), [_literal(label) for label in labels], fontsize=9 if len(labels) <= 30 else 6)
    if len(labels) <= MAX_ANNOTATED_CLASSES:
        for row in range(len(labels)):
            for column in range(len(OUTCOMES)):
                value = values[row, column]
                axes.text(column, row, f"{value:.2f}" if normalised else str(int(value)), ha="center", va="center",
                          fontsize=8, color="white" if value > 0.55 * top else "black")
    kind = "shares of the images with (without) the label" if normalised else "image counts"
    axes.set_title(f"Per-label outcomes{title_part}, {kind} (test split)")
    axes.set_ylabel("label")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share" if normalised else "images")
    figure.tight_layout()
    _save(figure, path)


def _ordered_history(history: pd.DataFrame) -> pd.DataFrame:
    """Phases one after another (train, then fine_tune, then any other in order of appearance), epochs in order."""
    table = history.copy()
    if "phase" not in table.columns:
        table["phase"] = "train"
    if "epoch" not in table.columns:
        table["epoch"] = table.groupby("phase").cumcount()
    appearance = list(dict.fromkeys(table["phase"].astype(str)))
    order = [phase for phase in PHASE_ORDER if phase in appearance] + [p for p in appearance if p not in PHASE_ORDER]
    table["phase"] = table["phase"].astype(str)
    table["_phase_rank"] = table["phase"].map({phase: rank for rank, phase in enumerate(order)})
    table = table.sort_values(["_phase_rank", "epoch"], kind="stable").reset_index(drop=True)
    table["step"] = np.arange(1, len(table) + 1)  # one continuous epoch count across phases
    return table.drop(columns="_phase_rank")


def _kept_row(table: pd.DataFrame, kept: dict[str, Any] | None) -> pd.Series | None:
    """The row of the epoch the model was kept from (the model card's `validation`: phase, 1-based epoch); None
    when the card does not say or the history lacks it."""
    if not kept or "phase" not in kept or "epoch" not in kept:
        return None
    rows = table[(table["phase"] == str(kept["phase"])) & (table["epoch"] == int(kept["epoch"]) - 1)]
    return None if rows.empty else rows.iloc[0]


CURVE_METRICS = (("loss", "Loss"), ("accuracy", "Accuracy"), ("macro_f1", "Macro-F1"))


def curves_figure(history: pd.DataFrame, kept: dict[str, Any] | None = None) -> Figure:
    """Loss, accuracy and macro-F1 (where recorded) per epoch, training against validation, with the phases on one
    continuous axis.

    `history` is history.csv: epoch (0-based within its phase), phase ('train', 'fine_tune' or 'head'), accuracy,
    loss, val_accuracy, val_loss, macro_f1 and val_macro_f1 where train recorded them. A dashed line marks where a
    phase starts; a dot on every panel marks the epoch kept (`kept`: the model card's `validation`, which names the
    phase, the 1-based epoch and the metric it was selected on).
    """
    if history.empty:
        return _message_figure("Training curves", "no training history")
    table = _ordered_history(history)
    steps = table["step"].to_numpy()
    style = {"marker": "o", "markersize": 3} if len(table) <= 40 else {}
    phase_starts = table.groupby("phase", sort=False)["step"].min()
    shown = [(metric, title) for metric, title in CURVE_METRICS
             if any(column in table.columns and table[column].notna().any() for column in (metric, f"val_{metric}"))]
    kept_row = _kept_row(table, kept)

    figure = Figure(figsize=(5.5 * len(shown), 4.2))
    for position, (metric, title) in enumerate(shown, start=1):
        axes = figure.add_subplot(1, len(shown), position)
        for column, name, colour in ((metric, "training", "#4c72b0"), (f"val_{metric}", "validation", "#dd8452")):
            if column in table.columns and table[column].notna().any():
                axes.plot(steps, table[column].to_numpy(dtype=float), label=name, color=colour, **style)
        for phase, start in phase_starts.items():
            if start > 1:
                axes.axvline(start - 0.5, color="#777777", linestyle="--", linewidth=1)
                axes.annotate(f"{phase.replace('_', '-')} starts", xy=(start - 0.5, 1),
                              xycoords=("data", "axes fraction"), xytext=(3, -12), textcoords="offset points",
                              fontsize=8, color="#555555")
        column = f"val_{metric}"
        if kept_row is not None and column in table.columns and pd.notna(kept_row[column]):
            selected_on = (kept or {}).get("selected_on") or "val_loss"
            axes.plot([kept_row["step"]], [float(kept_row[column])], "o", color="#c44e52", markersize=7,
                      label=f"kept: epoch {int(kept_row['step'])} (best validation {selected_on.removeprefix('val_')})")
        if metric != "loss":
            axes.set_ylim(top=min(1.02, axes.get_ylim()[1] + 0.02))
        axes.set_xlabel("epoch (all phases; a head's steps are the regularisation strengths it tried)"
                        if "head" in phase_starts else "epoch (all phases)")
        axes.set_ylabel(title.lower() if metric != "macro_f1" else title)
        axes.set_title(f"{title} per epoch")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize=8)
    figure.suptitle("Training curves")
    figure.tight_layout()
    return figure


def training_curves(history: pd.DataFrame, path: Path, kept: dict[str, Any] | None = None) -> None:
    """Save curves_figure: loss, accuracy and macro-F1 per epoch, the kept epoch marked."""
    _save(curves_figure(history, kept), path)


def per_class_bars(per_class: dict[str, dict[str, float]], path: Path) -> None:
    """Save precision, recall and F1 of each class as horizontal grouped bars (metrics.json's "per_class").

    Above MAX_BAR_CLASSES classes only those with the lowest F1 are drawn (the title says so).
    """
    if not per_class:
        _save(_message_figure("Per-class precision, recall and F1", "no per-class metrics"), path)
        return
    labels = list(per_class)
    title = "Per-class precision, recall and F1 (test split)"
    if len(labels) > MAX_BAR_CLASSES:
        labels = sorted(labels, key=lambda label: per_class[label].get("f1", 0.0))[:MAX_BAR_CLASSES]
        title = f"Per-class precision, recall and F1: the {MAX_BAR_CLASSES} lowest-F1 of {len(per_class)} classes"
    metrics = ("precision", "recall", "f1")
    bar_height = 0.26
    inches_per_class = 0.75 if len(labels) <= 10 else 0.45
    figure = Figure(figsize=(9, max(2.8, inches_per_class * len(labels) + 1.5)))
    axes = figure.add_subplot()
    rows = np.arange(len(labels))
    for offset, metric in enumerate(metrics):
        values = [float(per_class[label].get(metric, 0.0)) for label in labels]
        bars = axes.barh(rows + (offset - 1) * bar_height, values, height=bar_height,
                         color=METRIC_COLOURS[metric], label="F1" if metric == "f1" else metric)
        if len(labels) <= 20:
            axes.bar_label(bars, labels=[f"{value:.2f}" for value in values], padding=2, fontsize=7)

    def describe(label: str) -> str:
        support = per_class[label].get("support")
        return _literal(f"{label} (n={int(support)})" if support is not None else label)

    axes.set_yticks(rows, [describe(label) for label in labels], fontsize=9 if len(labels) <= 30 else 7)
    axes.set_ylim(len(labels) - 0.5, -0.5)  # first class at the top, as in a table, without empty margins
    axes.set_xlim(0, 1.12)
    axes.set_xlabel("score")
    axes.set_title(title)
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)  # beside the bars, never over them
    figure.tight_layout()
    _save(figure, path)


Thumbnails = Callable[[list[str]], list[np.ndarray | None]]  # image paths -> square pictures, None if unreadable


def mistakes_gallery(rows: pd.DataFrame, thumbnails: Thumbnails, path: Path, limit: int = 24) -> None:
    """Save a grid of the most confident mistakes, each captioned "true X / predicted Y (0.97)".

    `rows` has columns path, actual, predicted and confidence; rows whose prediction is right are ignored, so the
    whole test_predictions.csv may be passed. `thumbnails` gives the pictures of the paths shown (THUMBNAIL_SIDE
    squares); one it cannot give is drawn as a blank tile.
    """
    mistakes = rows[rows["actual"].astype(str) != rows["predicted"].astype(str)]
    if mistakes.empty:
        _save(_message_figure("Most confident mistakes", "no mistakes on the test split"), path)
        return
    shown = mistakes.sort_values("confidence", ascending=False, kind="stable").head(max(1, limit))
    columns = min(GALLERY_COLUMNS, len(shown))
    grid_rows = math.ceil(len(shown) / columns)
    figure = Figure(figsize=(1.8 * columns, 2.2 * grid_rows + 0.5))  # about the width of the report page
    pictures = thumbnails([str(name) for name in shown["path"]])
    for position, (row, pixels) in enumerate(zip(shown.itertuples(index=False), pictures), start=1):
        axes = figure.add_subplot(grid_rows, columns, position)
        if pixels is None:
            axes.imshow(np.full((THUMBNAIL_SIDE, THUMBNAIL_SIDE, 3), 220, dtype=np.uint8))
            axes.text(THUMBNAIL_SIDE / 2, THUMBNAIL_SIDE / 2, "unreadable", ha="center", va="center", color="#555555")
        else:
            axes.imshow(pixels)
        axes.set_xticks([])
        axes.set_yticks([])
        caption = (f"true {_shorten(str(row.actual), 20)}\n"
                   f"predicted {_shorten(str(row.predicted), 14)} ({float(row.confidence):.2f})")
        axes.set_title(_literal(caption), fontsize=8.5, color="#8b1a1a")
        axes.set_xlabel(_literal(_shorten(str(row.path), 30, keep_end=True)), fontsize=6.5, color="#555555")
    figure.suptitle(f"Most confident mistakes: {len(shown)} of {len(mistakes)} misclassified test images",
                    fontsize=12)
    figure.tight_layout()
    _save(figure, path)


def _shorten(text: str, width: int, keep_end: bool = False) -> str:
    """At most `width` characters, an ellipsis where text was cut (at the start of a path, which ends in the name)."""
    if len(text) <= width:
        return text
    return "…" + text[-(width - 1):] if keep_end else text[:width - 1] + "…"
