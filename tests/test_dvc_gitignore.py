"""The .gitignore files committed beside DVC's outputs already name every output, so that a run (which has DVC add
what is missing) leaves the clone clean: no `+dirty` model card, nothing to commit but dvc.lock."""

from pathlib import Path

import yaml

from tests.conftest import PROJECT_ROOT


def _outputs() -> list[str]:
    """Every cached output of dvc.yaml (outs, metrics, plots), with ${paths.*} filled from params.yaml."""
    folders = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())["paths"]
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    found = []
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                name = next(iter(entry)) if isinstance(entry, dict) else entry
                options = entry[name] if isinstance(entry, dict) else {}
                if (options or {}).get("cache", True) is False:
                    continue
                for key, folder in folders.items():
                    name = name.replace("${paths.%s}" % key, folder)
                found.append(name.rstrip("/"))
    return found


def test_every_output_is_in_the_committed_gitignore_beside_it() -> None:
    missing = []
    for output in _outputs():
        path = Path(output)
        ignore = PROJECT_ROOT / path.parent / ".gitignore"
        entries = ignore.read_text().split() if ignore.is_file() else []
        if f"/{path.name}" not in entries:
            missing.append(f"{path.parent}/.gitignore lacks /{path.name}")
    assert not missing, missing
