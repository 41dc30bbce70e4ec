"""Run report: reads data/reports/ (validation, evaluation, gate) and the model card, writes data/reports/index.html."""

from __future__ import annotations

import base64
import datetime
import html
import json
import logging
from pathlib import Path
from typing import Any

from tasks import atomic, metrics_file, model_folder, processed_store
from tasks.paths import Paths
from tasks.hashing import file_sha256
from tasks.release import report_html, report_sections

logger = logging.getLogger(__name__)

FIGURES = (  # (file in paths.evaluation, caption), in the order the report shows them
    ("training_curves.png", "Training curves"),
    ("confusion_matrix.png", "Confusion matrix (counts)"),
    ("confusion_matrix_normalised.png", "Confusion matrix (share of each actual class)"),
    ("per_class.png", "Per-class precision, recall and F1"),
    ("mistakes.png", "Most confident mistakes"),
)
# a multi-label evaluation draws per-label outcomes under the confusion matrix's file names
MULTI_LABEL_CAPTIONS = {
    "confusion_matrix.png": "Per-label outcomes (counts of true and false positives and negatives)",
    "confusion_matrix_normalised.png": "Per-label outcomes (shares of the images with, and without, each label)",
    "per_class.png": "Per-label precision, recall and F1",
    "mistakes.png": "Most confident mistakes (label set not exactly right)",
}
PER_CLASS_COLUMNS = ("precision", "recall", "f1", "support")
PER_LABEL_COLUMNS = ("precision", "recall", "f1", "support", "average_precision", "threshold")
LINEAGE_TITLES = {
    "git_revision": "git revision",
    "data_sha256": "training data sha256 (split table)",
    "model_version": "model version",
    "prefect_flow_run_id": "Prefect flow run id",
    "created_at": "report created",
}
HEADLINE_ORDER = ("accuracy", "macro_f1", "weighted_f1")
BADGES = {"pass": ("PASS", "pass"), "fail": ("FAIL", "fail")}

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:0;
 color:#1f2328;background:#f6f8fa;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:24px;background:#fff;min-height:100vh}
h1{font-size:1.6em;margin:0 0 .2em}h2{font-size:1.25em;border-bottom:1px solid #d0d7de;padding-bottom:.2em;
 margin-top:1.8em}
.badge{display:inline-block;padding:.15em .6em;border-radius:4px;font-weight:700;color:#fff;margin-right:.5em}
.pass{background:#1a7f37}.fail{background:#cf222e}.none{background:#6e7781}
.sentence{font-size:1.1em;margin:.5em 0}.muted{color:#656d76}
nav a{margin-right:1em}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
th,td{border:1px solid #d0d7de;padding:.3em .7em;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.number{text-align:right;font-variant-numeric:tabular-nums}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em;word-break:break-all}
pre{background:#f6f8fa;border:1px solid #d0d7de;padding:12px;overflow-x:auto;font-size:.85em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #d0d7de}
figcaption{color:#656d76;font-size:.9em}.note{color:#9a6700}
"""


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when it is missing or unreadable (the report shows a note instead)."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        logger.warning("report: cannot read %s (%s); leaving its section empty", path, error)
        return None
    return value if isinstance(value, dict) else None


def read_metrics(paths: Paths) -> dict[str, Any] | None:
    """The test metrics: metrics.json's headline figures with the per-class tables kept beside it (per_class.json)."""
    headline = _read_json(paths.evaluation / metrics_file.HEADLINE_FILE)
    if headline is None:
        return None
    return metrics_file.plain(headline) | (_read_json(paths.evaluation / metrics_file.DETAILS_FILE) or {})


def _sha256(path: Path) -> str | None:
    return file_sha256(path) if path.is_file() else None


def _interval(metrics: dict[str, Any], key: str) -> str:
    interval = metrics.get(f"{key}_ci")
    if isinstance(interval, (list, tuple)) and len(interval) == 2:
        return f"{report_html.number(interval[0])} – {report_html.number(interval[1])}"
    return ""


def headline_metrics(metrics: dict[str, Any]) -> list[str]:
    """The scalar metrics worth a headline, in a stable order: accuracy, F1s, top-k accuracy, ECE, then the rest."""
    scalars = [key for key, value in metrics.items() if isinstance(value, (int, float)) and not isinstance(value, bool)]
    top_k = sorted(key for key in scalars if key.startswith("top_") and key.endswith("_accuracy"))
    first = [key for key in (*HEADLINE_ORDER, *top_k, "ece") if key in scalars]
    return first + [key for key in scalars if key not in first]


def collect_lineage(paths: Paths, lineage: dict[str, str] | None) -> dict[str, str]:
    """git revision, manifest and model hashes, Prefect run id and time; values given in `lineage` win."""
    card = _read_json(paths.candidate / model_folder.CARD_FILE) or {}
    gate = _read_json(paths.evaluation / "gate.json") or {}
    found = {
        "git_revision": card.get("git_revision"),
        "data_sha256": card.get("data_sha256") or _sha256(processed_store.table_file(paths.processed)),
        "model_version": card.get("version") or (gate.get("candidate") or {}).get("version"),
        "prefect_flow_run_id": None,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for key, title in (("model", "model"), ("image_size", "image size"), ("epochs_run", "epochs run"),
                       ("train_seconds", "training seconds")):
        if key in card:
            found[title] = card[key]
    found |= dict(lineage or {})
    return {key: "not recorded" if value in (None, "") else str(value) for key, value in found.items()}


def _header(gate: dict[str, Any] | None, lineage: dict[str, str]) -> str:
    if gate is None:
        badge, sentence = ("NO GATE YET", "none"), "The candidate has not been through the gate yet."
    else:
        badge = BADGES.get(str(gate.get("decision")), (str(gate.get("decision", "?")).upper(), "none"))
        sentence = str(gate.get("sentence", ""))
        sentence += " Promoted to production." if gate.get("promoted") else " Not promoted."
        judged = str((gate.get("candidate") or {}).get("version", ""))
        if judged and lineage.get("model_version") not in (judged, "not recorded"):
            sentence += (f" Caution: this decision was made for another model (version {judged}), not the "
                         "candidate in this report; run the gate again.")
    links = "".join(f"<a href=\"#{anchor}\">{title}</a>" for anchor, title in (
        ("lineage", "Lineage"), ("validation", "Validation"), ("splits", "Splits"), ("metrics", "Metrics"),
        ("figures", "Figures"), ("gate", "Gate")))
    return (f"<header><h1>imgpipe run report</h1><p class=\"muted\">created {html.escape(lineage['created_at'])}</p>"
            f"<p class=\"sentence\"><span class=\"badge {badge[1]}\">{html.escape(badge[0])}</span>"
            f"{html.escape(sentence)}</p><nav>{links}</nav></header>")


def _lineage_section(lineage: dict[str, str]) -> str:
    rows = [(LINEAGE_TITLES.get(key, key), value) for key, value in lineage.items()]
    return f"<section id=\"lineage\"><h2>Lineage</h2>{report_html.pairs(rows, code=True)}</section>"


def _validation_section(paths: Paths) -> str:
    summary_file = paths.validation / "summary.txt"
    body = (f"<pre>{html.escape(summary_file.read_text(encoding='utf-8', errors='replace'))}</pre>"
            if summary_file.is_file() else report_html.missing("No validation summary (validation/summary.txt) yet."))
    if (paths.validation / "data_docs" / "index.html").is_file():
        body += "<p><a href=\"validation/data_docs/index.html\">Great Expectations Data Docs</a></p>"
    return f"<section id=\"validation\"><h2>Validation</h2>{body}</section>"


def _splits_section(preprocess: dict[str, Any] | None) -> str:
    if not preprocess or "counts" not in preprocess:
        note = report_html.missing("No split counts (preprocess.json) yet.")
        return f"<section id=\"splits\"><h2>Split counts</h2>{note}</section>"
    splits = list(preprocess["counts"])
    per_class: dict[str, dict[str, int]] = preprocess.get("counts_per_class") or {}
    labels = list(dict.fromkeys(label for split in splits for label in per_class.get(split, {})))
    rows = [[label, *(report_html.number(per_class.get(split, {}).get(label, 0)) for split in splits),
             report_html.number(sum(per_class.get(split, {}).get(label, 0) for split in splits))] for label in labels]
    rows.append(["all classes", *(report_html.number(preprocess["counts"][split]) for split in splits),
                 report_html.number(sum(preprocess["counts"].values()))])
    return f"<section id=\"splits\"><h2>Split counts</h2>{report_html.table(['class', *splits, 'total'], rows)}</section>"


def _metrics_section(metrics: dict[str, Any] | None) -> str:
    if metrics is None:
        return f"<section id=\"metrics\"><h2>Test metrics</h2>{report_html.missing('No metrics (metrics.json) yet.')}</section>"
    rows = [[key, report_html.number(metrics[key]), _interval(metrics, key)] for key in headline_metrics(metrics)]
    body = report_html.table(["metric", "value", "interval (low – high)"], rows)
    per_class: dict[str, dict[str, Any]] = metrics.get("per_class") or {}
    if per_class:
        multi_label = metrics.get("task") == "multi_label"
        columns = PER_LABEL_COLUMNS if multi_label else PER_CLASS_COLUMNS
        class_rows = [[label, *(report_html.number(values.get(name)) for name in columns)] for label, values in per_class.items()]
        header = ["label" if multi_label else "class", *(name.replace("_", " ").replace("f1", "F1") for name in columns)]
        body += f"<h3>Per {'label' if multi_label else 'class'}</h3>" + report_html.table(header, class_rows)
    return f"<section id=\"metrics\"><h2>Test metrics</h2>{body}</section>"


def _figures_section(paths: Paths, multi_label: bool = False) -> str:
    parts = []
    for name, caption in FIGURES:
        caption = MULTI_LABEL_CAPTIONS.get(name, caption) if multi_label else caption
        file = paths.evaluation / name
        if file.is_file():
            data = base64.b64encode(file.read_bytes()).decode("ascii")
            parts.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{html.escape(caption)}\">"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        else:
            parts.append(f"<h3>{html.escape(caption)}</h3>{report_html.missing(f'Not drawn yet (evaluation/{name} is missing).')}")
    return f"<section id=\"figures\"><h2>Figures</h2>{''.join(parts)}</section>"


def _label_sets_part(label_sets: dict[str, Any] | None) -> str:
    """Both label sets side by side, when the candidate's differs from production's; nothing otherwise."""
    if not label_sets or label_sets.get("same", True):
        return ""
    rows = [("production labels", f"{len(label_sets.get('production') or [])}: "
                                  + ", ".join(label_sets.get("production") or [])),
            ("candidate labels", f"{len(label_sets.get('candidate') or [])}: "
                                 + ", ".join(label_sets.get("candidate") or [])),
            ("added by the candidate", ", ".join(label_sets.get("added") or []) or "none"),
            ("dropped by the candidate", ", ".join(label_sets.get("removed") or []) or "none")]
    return ("<h3>The label sets differ</h3><p class=\"note\">The candidate and the production model know different "
            "classes, so their scores are not compared.</p>" + report_html.pairs(rows))


def _noise(record: dict[str, Any] | None) -> str:
    """The data health record of gate.json as a share, or why there is none."""
    rate = (record or {}).get("estimated_noise_rate")
    return f"{rate:.1%}" if isinstance(rate, (int, float)) else "not estimated"


def _gate_section(gate: dict[str, Any] | None) -> str:
    if gate is None:
        return f"<section id=\"gate\"><h2>Gate</h2>{report_html.missing('No gate decision (gate.json) yet.')}</section>"
    candidate = gate.get("candidate") or {}
    champion = gate.get("champion") or {}
    body = report_html.pairs([("decision", str(gate.get("decision", "?"))),
                   ("headline metric", str(gate.get("headline_metric", "?"))),
                   ("tolerance", report_html.number(gate.get("tolerance"))), ("promoted", report_html.number(bool(gate.get("promoted")))),
                   ("candidate model version", str(candidate.get("version", "—"))),
                   ("champion model version", str(champion.get("version", "none: no production model yet"))),
                   ("estimated label noise of the data", _noise(gate.get("data_health"))),
                   ("decided at", str(gate.get("created_at", "—")))])
    body += _label_sets_part(gate.get("label_sets")) + report_sections.data_lineage_part(gate.get("lineage"))
    checks = [[str(check.get("name", "")), "passed" if check.get("passed") else "FAILED", report_html.number(check.get("value")),
               report_html.number(check.get("threshold")), str(check.get("detail", ""))] for check in gate.get("checks") or []]
    body += "<h3>Checks</h3>" + (report_html.table(["check", "result", "value", "threshold", "detail"], checks, numeric_from=2)
                                 if checks else report_html.missing("The gate recorded no checks."))
    candidate_metrics, champion_metrics = candidate.get("metrics") or {}, champion.get("metrics") or {}
    keys = headline_metrics(candidate_metrics) + [key for key in headline_metrics(champion_metrics)
                                                  if key not in candidate_metrics]
    if keys:
        rows = [[key, report_html.number(candidate_metrics.get(key)), report_html.number(champion_metrics.get(key))] for key in keys]
        body += "<h3>Candidate against champion</h3>" + report_html.table(["metric", "candidate", "champion"], rows)
    return f"<section id=\"gate\"><h2>Gate</h2>{body}</section>"


def render(paths: Paths, lineage: dict[str, str]) -> str:
    """The whole page as one string: inline CSS, images as data URIs, no scripts and no external references."""
    gate = _read_json(paths.evaluation / "gate.json")
    metrics = read_metrics(paths)
    multi_label = (metrics or {}).get("task") == "multi_label"
    sections = [_header(gate, lineage), _lineage_section(lineage), _validation_section(paths),
                _splits_section(_read_json(processed_store.summary_file(paths.processed))),
                _metrics_section(metrics), _figures_section(paths, multi_label),
                _gate_section(gate), *report_sections.sections(paths)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>imgpipe run report</title><style>{STYLE}</style></head>"
            f"<body><main>{''.join(sections)}</main></body></html>\n")


def run(paths: Paths, lineage: dict[str, str] | None = None) -> Path:
    """Write paths.reports/index.html from whatever inputs exist; missing ones become a note on the page."""
    target = paths.reports / "index.html"
    page = render(paths, collect_lineage(paths, lineage))
    atomic.write_text(target, page)
    logger.info("report: wrote %s (%.0f KiB)", target, len(page.encode("utf-8")) / 1024)
    return target


def markdown_summary(paths: Paths) -> str:
    """A short markdown text for a Prefect artifact: the gate decision, headline metrics with intervals, per class."""
    gate = _read_json(paths.evaluation / "gate.json")
    metrics = read_metrics(paths)
    if gate is None:
        lines = ["## Gate: no decision yet", ""]
    else:
        promoted = "promoted" if gate.get("promoted") else "not promoted"
        decision = str(gate.get("decision", "?")).upper()
        lines = [f"## Gate: {decision} ({promoted})", "", str(gate.get("sentence", "")), ""]
        label_sets = gate.get("label_sets") or {}
        if label_sets and not label_sets.get("same", True):
            lines += [f"Production labels: {_markdown_cell(', '.join(label_sets['production']))}  ",
                      f"Candidate labels: {_markdown_cell(', '.join(label_sets['candidate']))}", ""]
        lines += report_sections.lineage_markdown(gate.get("lineage"))
    if metrics is None:
        return "\n".join(lines + ["No test metrics yet."]) + "\n"
    lines += ["| metric | value | interval |", "|---|---:|---|"]
    lines += [f"| {key} | {report_html.number(metrics[key])} | {_interval(metrics, key)} |" for key in headline_metrics(metrics)]
    per_class: dict[str, dict[str, Any]] = metrics.get("per_class") or {}
    if per_class:
        multi_label = metrics.get("task") == "multi_label"
        columns = PER_LABEL_COLUMNS if multi_label else PER_CLASS_COLUMNS
        header = ["label" if multi_label else "class", *(name.replace("_", " ").replace("f1", "F1") for name in columns)]
        lines += ["", "| " + " | ".join(header) + " |", "|---|" + "---:|" * len(columns)]
        lines += [f"| {_markdown_cell(label)} | " + " | ".join(report_html.number(values.get(name)) for name in columns) + " |"
                  for label, values in per_class.items()]
    return "\n".join(lines) + "\n"


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
