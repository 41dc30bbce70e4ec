"""The model registry as a list: reads registry/history.jsonl, the registry's model cards and gate.json; writes nothing.

One entry per registry version, in the order they were first promoted: when, the headline test metrics the gate
saw, the gate's decision (or that the promotion was forced), whether it was rolled back, and which version is in
production; then the versions the registry folder holds that history.jsonl does not name (a missing or damaged
history is named, never a reason to fail); then the candidate, when it is not in the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks import model_folder, registry
from tasks.paths import Paths
from tasks.release import gate_record, promote

HEADLINE = ("accuracy", "macro_f1")


@dataclass
class ModelEntry:
    version: str
    promoted_at: str = ""  # the first promotion ("" for a candidate never promoted)
    trained: str = ""  # model, image size, epochs from its model card
    metrics: dict[str, float] = field(default_factory=dict)  # the headline test metrics at promotion
    gate: str = ""  # pass | fail | forced (over a refusal) | "" (not recorded)
    production: bool = False
    notes: list[str] = field(default_factory=list)  # rolled back, why, by whom


def _trained(folder: Any) -> str:
    try:
        card = model_folder.read_card(folder)
    except ValueError:
        return "model card missing"
    return f"{card.get('model', '?')} {card.get('image_size', '?')} px, {card.get('epochs_run', '?')} epochs"


def list_models(paths: Paths) -> tuple[list[ModelEntry], dict[str, Any] | None]:
    """The registry's versions, oldest first, and the candidate's line when it is not in the registry (or None)."""
    history = promote.read_history(paths)
    current = promote.current_version(paths)
    entries: dict[str, ModelEntry] = {}
    for event in history:
        version = event.get("version", "")
        entry = entries.setdefault(version, ModelEntry(version, trained=_trained(paths.registry / version)))
        if event["action"] == "promote":
            entry.promoted_at = entry.promoted_at or event.get("at", "")
            entry.metrics = {key: value for key, value in (event.get("metrics") or {}).items() if key in HEADLINE}
            decision = event.get("gate_decision") or ""
            entry.gate = f"forced ({decision or 'no decision'})" if event.get("forced") else decision
            if event.get("forced"):
                entry.notes.append(f"forced: {event.get('reason', '')}")
        elif event["action"] == "rollback":
            entry.notes.append(f"rolled back {event.get('at', '')}: {event.get('reason', '')}")
    if paths.registry.is_dir():
        for folder in sorted(paths.registry.iterdir()):
            if folder.name not in entries and not folder.name.startswith(".") and model_folder.exists(folder):
                entries[folder.name] = ModelEntry(folder.name, trained=_trained(folder), notes=[
                    f"in {paths.registry.name}/, but no record of it in {registry.HISTORY_FILE}"])
    for version, entry in entries.items():
        entry.production = version == current
    candidate = None
    if model_folder.exists(paths.candidate):
        version = model_folder.version_of(paths.candidate)
        if version not in entries:
            gate = gate_record.read(paths.gate) if gate_record.is_current(paths) else None
            gate = gate or {}
            candidate = {"version": version, "trained": _trained(paths.candidate),
                         "gate": gate.get("decision", "not judged"), "sentence": gate.get("sentence", "")}
    return list(entries.values()), candidate


def format_models(entries: list[ModelEntry], candidate: dict[str, Any] | None, paths: Paths) -> str:
    """The listing as plain text: one line per version, production starred."""
    lines = ["", f"imgpipe models: {len(entries)} version(s) in {paths.registry}", ""]
    if entries:
        lines.append(f"    {'version':<14}{'first promoted':<27}{'accuracy':>9}{'macro-F1':>10}  {'gate':<10}trained")
        for entry in entries:
            marker = "*" if entry.production else " "
            accuracy, macro_f1 = (entry.metrics.get(key) for key in HEADLINE)
            lines.append(f"  {marker} {entry.version:<14}{entry.promoted_at:<27}"
                         f"{_score(accuracy):>9}{_score(macro_f1):>10}  {entry.gate or '-':<10}{entry.trained}")
            lines += [f"      {note}" for note in entry.notes]
        production = next((entry.version for entry in entries if entry.production), None)
        lines += ["", f"  production: {production}  (* above; data/models/production)" if production else
                  "  production: none (every version was rolled back)"]
    else:
        lines.append("  no model was ever promoted (`imgpipe run` promotes a candidate that passes the gate)")
    if candidate:
        lines.append(f"  candidate:  {candidate['version']}  not in the registry; gate: {candidate['gate']}"
                     + (f" ({candidate['sentence']})" if candidate["sentence"] else ""))
    return "\n".join(lines) + "\n"


def _score(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"
