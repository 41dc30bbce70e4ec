"""Stage packages are peers: a module of one imports foundations only, never another stage package, and no
foundation imports a stage package (no arrow runs back up).

The imports are read from the source with `ast` (every import statement, also those inside functions), as in
tests/test_dvc_deps.py. What two stages share moves down into a foundation: a module of tasks/ or one of the
FOUNDATION_PACKAGES.
"""

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

TASKS = PROJECT_ROOT / "tasks"
# the sub-packages of tasks/ that are foundations; every other folder of tasks/ with Python modules is a stage
# package (one per dvc.yaml stage, and the commands': predict, release, tune)
FOUNDATION_PACKAGES = {"backbones", "engines", "scoring"}


def stage_packages() -> set[str]:
    return {folder.name for folder in TASKS.iterdir()
            if folder.is_dir() and folder.name not in FOUNDATION_PACKAGES and any(folder.glob("*.py"))}


def imported_tasks_names(source: str, package: list[str]) -> set[str]:
    """The names directly under tasks/ (a foundation module, a foundation package or a stage package) that a
    module's source imports; `package` is the module's package as dotted parts (["tasks", "train"]), for relative
    imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "tasks" and len(parts) > 1:
                    names.add(parts[1])
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            parts = base + (node.module.split(".") if node.module else [])
            if parts == ["tasks"]:  # `from tasks import train`: each name is one under tasks/
                names |= {alias.name for alias in node.names}
            elif parts[:1] == ["tasks"] and len(parts) > 1:
                names.add(parts[1])
    return names


def other_stages(source: str, package: list[str]) -> set[str]:
    """The stage packages, other than the module's own, that a module's source imports."""
    own = package[1] if len(package) > 1 else None
    return (imported_tasks_names(source, package) & stage_packages()) - {own}


def package_of(file: Path) -> list[str]:
    return list(file.relative_to(PROJECT_ROOT).parent.parts)


@pytest.mark.parametrize("name", sorted(stage_packages()))
def test_a_stage_package_imports_no_other_stage_package(name):
    found = {str(file.relative_to(PROJECT_ROOT)): sorted(stages) for file in sorted((TASKS / name).rglob("*.py"))
             if (stages := other_stages(file.read_text(encoding="utf-8"), package_of(file)))}
    assert not found, (f"tasks/{name} imports other stage packages: {found}; move what they share down into a "
                       "foundation (a module of tasks/ or a foundation package)")


def test_no_foundation_imports_a_stage_package():
    files = [*TASKS.glob("*.py"), *(file for name in FOUNDATION_PACKAGES for file in (TASKS / name).rglob("*.py"))]
    found = {str(file.relative_to(PROJECT_ROOT)): sorted(stages) for file in sorted(files)
             if (stages := other_stages(file.read_text(encoding="utf-8"), package_of(file)))}
    assert not found, f"foundations import stage packages (an arrow back up): {found}"


def test_the_packages_are_sorted_into_stages_and_foundations():
    assert all((TASKS / name).is_dir() for name in FOUNDATION_PACKAGES)
    dvc_stages = set(yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"])
    assert dvc_stages <= stage_packages()
    assert {"predict", "release", "tune"} <= stage_packages()


def test_a_stage_to_stage_import_is_found_wherever_it_is_written():
    source = """
import logging
from tasks import atomic, processed_store
from tasks.scoring import metrics
from tasks.evaluate import plots
from . import confusion

def f():
    from tasks.train import dataset
    import tasks.predict.classify

class C:
    def g(self):
        from tasks import release
        from .. import tune
"""
    assert other_stages(source, ["tasks", "evaluate"]) == {"train", "predict", "release", "tune"}
    assert other_stages(source, ["tasks", "train"]) == {"evaluate", "predict", "release", "tune"}
    assert other_stages("from tasks import atomic\nimport tasks.engines.engine\n", ["tasks", "train"]) == set()
    # and it fails the test's assertion on such a package
    assert other_stages("def h():\n    from tasks.train import model\n", ["tasks", "tune"]) == {"train"}
