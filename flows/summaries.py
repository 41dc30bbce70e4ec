"""What the `imgpipe` command prints after a training run, a classification, a sweep, a range test or a gc: plain
text from the summaries that the flows return, with the settings that messages name spelt as flags. Reads and writes
nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.cli_flags import for_command_line


def format_summary(summary: dict[str, Any]) -> str:
    """A short, plain-text account of a training run: each stage and its time, test accuracy, where things are."""
    lines = ["", f"imgpipe training run: {summary.get('outcome', '')}", "", f"  {'stage':<12}{'status':<10}{'seconds':>8}"]
    for stage in summary["stages"]:
        lines.append(f"  {stage['name']:<12}{stage['status']:<10}{stage['seconds']:>8.1f}")
    metrics = summary.get("metrics") or {}
    if metrics:
        accuracy_low, accuracy_high = metrics.get("accuracy_ci", [float("nan")] * 2)
        lines += ["", f"  test accuracy  {metrics['accuracy']:.4f}  (95% interval {accuracy_low:.3f}-{accuracy_high:.3f})"
                      f"   macro-F1  {metrics['macro_f1']:.4f}   ({metrics['test_images']} test images)"]
    if summary.get("recovered"):
        lines += ["", "  finished what an interrupted run left:"] + [f"    {item}" for item in summary["recovered"]]
    if summary.get("gate"):
        lines += ["", f"  gate: {summary['gate']['decision']}  ->  {summary['outcome']}",
                  f"  {for_command_line(summary['gate']['sentence'])}"]
    lines.append("")
    root = Path(summary["repo"])
    for name, location in summary.get("outputs", {}).items():
        path = Path(location)
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        lines.append(f"  {name + ':':<20}{shown}")
    lines.append(f"  {'pushed to remote:':<20}{'yes' if summary.get('pushed') else 'no'}")
    committed = (summary.get("committed") or "").split(" ")[0]
    in_a_commit = bool(committed) and all(character in "0123456789abcdef" for character in committed)
    for change in summary.get("params_changed") or []:
        lines.append(f"  {'params.yaml:':<20}{change}  " + (
            f"(committed with the run's dvc.lock; `git checkout {committed}~1 -- params.yaml` brings back the value "
            "before it)" if in_a_commit else "(kept; `git checkout params.yaml` undoes it)"))
    if summary.get("committed"):
        lines.append(f"  {'git commit:':<20}{summary['committed']}")
    return "\n".join(lines) + "\n"


def format_predict_summary(summary: dict[str, Any]) -> str:
    """A short, plain-text account of a classification run."""
    errors, skipped = summary["errors"], summary.get("skipped", {})
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(errors.items()))
    skipped_reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items()))
    rate = summary["files"] / summary["seconds"] if summary["seconds"] else 0.0
    lines = ["", "imgpipe predict", "",
             f"  {'files:':<14}{summary['files']}",
             f"  {'ok:':<14}{summary['ok']}",
             f"  {'errors:':<14}{sum(errors.values())}" + (f"  ({reasons})" if reasons else ""),
             f"  {'skipped:':<14}{sum(skipped.values())}" + (f"  ({skipped_reasons}; not read: hidden names, links "
                                                           "to folders, out of SOURCE or dangling, special files)"
                                                           if skipped_reasons else ""),
             f"  {'classified:':<14}{summary['processed']}  (reused from the earlier table {summary['reused']}, "
             f"from an interrupted run {summary['resumed']})",
             f"  {'seconds:':<14}{summary['seconds']:.1f}  ({rate:.0f} files/s)",
             f"  {'model:':<14}{summary['model_folder']}  (version {summary['model_version']})",
             f"  {'engine:':<14}{summary.get('engine', '')} {summary.get('precision', '')}",
             f"  {'table:':<14}{summary['output']}"]
    copied = summary.get("copy_into")
    if copied:
        lines.append(f"  {'copied into:':<14}{copied['destination']}  ({copied['placed']} placed, "
                     f"{copied['already_there']} already there, {copied['conflict']} name conflicts left alone, "
                     f"{copied.get('refused', 0)} refused, {copied['changed']} changed since classified)")
        for problem, found in copied.get("problems", {}).items():
            lines.append(f"  {'':<14}not placed: {found['files']} file(s) (e.g. {found['example']}): "
                         f"{for_command_line(problem)}")
    return "\n".join(lines) + "\n"


def format_tune_summary(summary: dict[str, Any], repo: Path) -> str:
    """A short, plain-text account of a sweep: the trials ranked, the best one, where the results are."""
    counts = ", ".join(f"{number} {status}" for status, number in summary["counts"].items())
    lines = ["", f"imgpipe tune: sweep {summary['sweep']} ({counts}); objective {summary['objective']} on the "
                 "validation split", "", for_command_line(summary["text"]), ""]
    best = summary["best"]
    if best:
        settings = "  ".join(f"{key}={value}" for key, value in best["params"].items())
        lines.append(f"  best: {best['trial']}  {settings}  (val_accuracy {best['val_accuracy']:.4f}, "
                     f"val_loss {best['val_loss']:.4f})")
        if summary.get("applied"):
            lines.append("  applied to the workspace (params.yaml, dvc.lock, the candidate model); next: "
                         "`imgpipe run` evaluates it on the test split and gates it")
        else:
            lines.append(f"  not applied: `imgpipe tune --apply` (or `dvc exp apply {best['trial']}`) applies it")
    else:
        lines.append("  no trial finished; the notes in the table say why")
    lines.append("")
    for name in ("table", "plot", "sweep_file"):
        path = Path(summary[name])
        lines.append(f"  {name.replace('_', ' ') + ':':<14}{path.relative_to(repo) if path.is_relative_to(repo) else path}")
    lines.append(f"  {'compare:':<14}dvc exp show --only-changed;  dvc plots diff TRIAL TRIAL")
    for change in summary.get("params_changed") or []:
        lines.append(f"  {'params.yaml:':<14}{change}  (kept; `git checkout params.yaml` undoes it)")
    return "\n".join(lines) + "\n"


def format_lr_find_summary(result: Any) -> str:
    """A short account of a learning-rate range test (tasks/tune/lr_find.RangeTest) and how to use its suggestion."""
    return (f"\nimgpipe lr-find: {result.steps} batches; the smoothed loss was lowest at learning rate "
            f"{result.minimum_loss_rate:.2g}\n\n  suggested train.learning_rate: {result.suggested:.2g}\n\n"
            f"  plot:   {result.plot}\n  table:  {result.table}\n"
            f"  use it: dvc exp run -S train.learning_rate={result.suggested:.2g}   (or edit params.yaml)\n")


def format_gc_summary(summary: dict[str, Any]) -> str:
    """The raw store before and after `imgpipe gc` compacted it."""
    return (f"raw store: {summary['shards_before']} shards, {summary['bytes_before'] / 1e6:.1f} MB -> "
            f"{summary['shards_after']} shards, {summary['bytes_after'] / 1e6:.1f} MB "
            f"({summary['images_moved']} images moved)\n")
