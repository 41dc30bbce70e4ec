"""dvc.yaml's code deps cannot go stale: each stage lists exactly its package and the tasks/ modules it imports.

The imports are read from the source with `ast` (every import statement, also those inside functions), followed
transitively; nothing here is a hand-kept list.
"""

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT

TASKS = PROJECT_ROOT / "tasks"
STAGES = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """The file of a dotted module name under the project root, or None when it is not a module of this project."""
    path = PROJECT_ROOT.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return path / "__init__.py" if (path / "__init__.py").is_file() else None


def imported_modules(file: Path) -> set[str]:
    """The dotted names of the tasks modules one file imports."""
    names = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.split(".")[0] == "tasks"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "tasks":
            for alias in node.names:  # `from tasks import atomic` imports a module; `from tasks.x import f` does not
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if module_file(submodule) else node.module)
    return names


def code_closure(package: Path) -> set[Path]:
    """Every file of tasks/ that the package's modules import, directly or through others."""
    seen: set[Path] = set()
    pending = list(package.glob("*.py"))
    while pending:
        file = pending.pop()
        if file not in seen:
            seen.add(file)
            pending += [found for name in imported_modules(file) if (found := module_file(name)) is not None]
    return seen


def stage_packages() -> list[str]:
    names = []
    for name, stage in STAGES.items():
        match = re.fullmatch(r"tasks/bin/python -m tasks\.(\w+)", stage["cmd"].split("#")[0].strip())
        assert match, f"stage {name}: expected `tasks/bin/python -m tasks.<package>`, got {stage['cmd']!r}"
        names.append(match[1])
    return names


def test_every_stage_runs_its_own_package():
    assert stage_packages() == list(STAGES)
    for name in STAGES:
        assert (TASKS / name / "__main__.py").is_file() and (TASKS / name / "stage.py").is_file()


@pytest.mark.parametrize("name", list(STAGES))
def test_code_deps_are_the_package_and_every_module_it_imports(name):
    package = TASKS / name
    needed = {file for file in code_closure(package) if file.name != "__init__.py" or file.read_text().strip()}
    declared = [PROJECT_ROOT / dep for dep in STAGES[name]["deps"] if str(dep).startswith("tasks/")]
    uncovered = sorted(str(file.relative_to(PROJECT_ROOT)) for file in needed
                       if not any(file == dep or file.is_relative_to(dep) for dep in declared))
    assert not uncovered, f"dvc.yaml stage {name} imports these but does not depend on them: {uncovered}"
    unused = sorted(str(dep.relative_to(PROJECT_ROOT)) for dep in declared
                    if not any(file == dep or file.is_relative_to(dep) for file in needed))
    assert not unused, f"dvc.yaml stage {name} depends on modules it never imports: {unused}"
    assert package in declared, f"dvc.yaml stage {name} must depend on its whole package, tasks/{name}"


def test_package_init_files_stay_empty():
    """Spawned worker processes import packages on the way to a module: nothing may load TensorFlow there."""
    for init in TASKS.rglob("__init__.py"):
        assert init.read_text().strip() == "", f"{init} must stay empty"


def test_the_closure_sees_imports_inside_functions(tmp_path):
    file = tmp_path / "sample.py"
    file.write_text("def f():\n    from tasks import atomic\n    import tasks.images\n    from tasks.pool import ordered_map\n")
    assert imported_modules(file) == {"tasks.atomic", "tasks.images", "tasks.pool"}
