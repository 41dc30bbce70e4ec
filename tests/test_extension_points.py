"""The extension points stay in step: each kind (backbone, input layout, export format, engine) has one registry, and
every list that is not derived from it is held to it here, each failure naming the file to edit (README, Layout,
"Where to change what")."""

import ast
import importlib
import re
from typing import get_args

import pytest

from tasks import model_folder
from tasks.backbones import catalog, feature_engine
from tasks.engines import names
from tasks.ingest import layout
from tasks.params import EmbedParams, ExportName, IngestParams, ModelName
from tests.conftest import PROJECT_ROOT

PYPROJECT = (PROJECT_ROOT / "pyproject.toml").read_text()


def _defines_class(module: str, cls: str) -> bool:
    """Whether the project module `module` defines class `cls` (read with ast: no heavy library imported)."""
    file = PROJECT_ROOT.joinpath(*module.split(".")).with_suffix(".py")
    return file.is_file() and any(isinstance(node, ast.ClassDef) and node.name == cls
                                  for node in ast.walk(ast.parse(file.read_text())))


def _pinned(package: str) -> bool:
    return re.search(rf'^\s*"{re.escape(package)}[=<>~]', PYPROJECT, re.MULTILINE) is not None


# ---- backbones: tasks/backbones/catalog.py -----------------------------------------------------------------------

def test_train_model_names_every_backbone_of_the_catalog():
    expected = {"auto", "simple_cnn", *catalog.BACKBONES, *catalog.PIXEL_BACKBONES}
    assert set(get_args(ModelName)) == expected, (
        "tasks/params.py ModelName must name auto, simple_cnn and every backbone of tasks/backbones/catalog.py "
        f"(BACKBONES, PIXEL_BACKBONES): add or remove {sorted(expected ^ set(get_args(ModelName)))}")
    assert not set(catalog.BACKBONES) & set(catalog.PIXEL_BACKBONES), "a backbone is pretrained or on pixels, not both"


@pytest.mark.parametrize("name", sorted(catalog.BACKBONES))
def test_a_pretrained_backbone_pins_its_weights_package(name):
    assert _pinned(catalog.BACKBONES[name].pip_name.split("==")[0]), (
        f"pyproject.toml must pin {catalog.BACKBONES[name].pip_name} (tasks/backbones/catalog.py {name})")


def test_the_pixel_backbones_are_derived_from_the_catalog():
    from tasks import model_choice, networks

    assert tuple(networks.BACKBONES) == tuple(catalog.PIXEL_BACKBONES)
    assert model_choice.PIXEL_BACKBONE_SIZES == {name: entry.image_size
                                                 for name, entry in catalog.PIXEL_BACKBONES.items()}
    for name, entry in catalog.PIXEL_BACKBONES.items():
        assert entry.input_style in ("built_in", "caffe"), f"tasks/backbones/catalog.py {name}: input_style"


# ---- input layouts: tasks/ingest/layout.py FOLDER_LAYOUTS ----------------------------------------------------------

def test_ingest_layout_names_only_layouts_the_scan_knows():
    offered = set(get_args(IngestParams.model_fields["layout"].annotation)) - {"auto"}
    assert offered <= set(layout.FOLDER_LAYOUTS), (
        f"tasks/params.py ingest.layout offers {sorted(offered - set(layout.FOLDER_LAYOUTS))}, which "
        "tasks/ingest/layout.py FOLDER_LAYOUTS does not define")


@pytest.mark.parametrize("name", sorted(layout.FOLDER_LAYOUTS))
def test_a_folder_layout_gives_no_label_to_a_file_at_the_top(name):
    assert layout.FOLDER_LAYOUTS[name](["x.jpg"]) is None


# ---- export formats: tasks/model_folder.py EXPORTS ---------------------------------------------------------------

def test_export_formats_is_the_export_registry():
    assert set(get_args(ExportName)) == set(model_folder.EXPORTS), (
        "tasks/params.py ExportName must name every export of tasks/model_folder.py EXPORTS: add or remove "
        f"{sorted(set(get_args(ExportName)) ^ set(model_folder.EXPORTS))}")


def test_every_export_has_a_writer():
    from tasks.export import convert

    assert set(convert.WRITERS) == set(model_folder.EXPORTS), (
        "tasks/export/convert.py WRITERS must write every export of tasks/model_folder.py EXPORTS: add or remove "
        f"{sorted(set(convert.WRITERS) ^ set(model_folder.EXPORTS))}")


@pytest.mark.parametrize("name", sorted(model_folder.EXPORTS))
def test_every_export_is_checked_by_something_that_exists(name):
    entry = model_folder.EXPORTS[name]
    assert entry.checked_by, f"tasks/model_folder.py EXPORTS[{name!r}].checked_by names nothing"
    for runner in entry.checked_by:
        if runner not in names.REGISTRY:
            module, _, cls = runner.partition(":")
            assert _defines_class(module, cls), (
                f"tasks/model_folder.py EXPORTS[{name!r}].checked_by: {runner!r} is neither an engine of "
                "tasks/engines/names.py nor a class in a module of the project")
    for package in entry.packages:
        assert _pinned(package), f"pyproject.toml must pin {package} (tasks/model_folder.py EXPORTS[{name!r}])"


# ---- engines: tasks/engines/names.py REGISTRY --------------------------------------------------------------------

@pytest.mark.parametrize("name", names.ENGINES)
def test_every_engine_has_its_runner_its_package_and_its_files(name):
    entry = names.REGISTRY[name]
    module, _, cls = entry.runner.partition(":")
    assert module.startswith("tasks.engines.") and _defines_class(module, cls), (
        f"tasks/engines/names.py {name}: runner {entry.runner!r} must be a class of a module in tasks/engines/")
    assert getattr(importlib.import_module(module), cls).name == name, f"{entry.runner}.name must be {name!r}"
    assert _pinned(entry.package), f"pyproject.toml must pin {entry.package} (tasks/engines/names.py {name})"
    assert set(entry.files) <= set(names.PRECISIONS), (
        f"tasks/engines/names.py {name}: precisions {sorted(set(entry.files) - set(names.PRECISIONS))} are not in "
        "PRECISIONS")
    for precision, files in entry.files.items():
        unknown = [file for file in files if file not in ("keras", "int8", *model_folder.EXPORTS)]
        assert files and not unknown, (f"tasks/engines/names.py {name} {precision}: {unknown or 'no file'}; name "
                                       "keras, int8 or an export of tasks/model_folder.py EXPORTS")


def test_the_engine_lists_are_derived_from_the_registry():
    from tasks.engines import engine
    from tasks.predict.options import ENGINE_CHOICES, PRECISION_CHOICES

    assert tuple(engine.FILES) == tuple(engine.PACKAGES) == names.ENGINES == tuple(names.REGISTRY)
    assert ENGINE_CHOICES == (names.AUTO, *names.ENGINES) and PRECISION_CHOICES == (names.AUTO, *names.PRECISIONS)
    assert {precision for entry in names.REGISTRY.values() for precision in entry.files} == set(names.PRECISIONS), (
        "tasks/engines/names.py PRECISIONS names a precision that no engine runs")


def test_embed_engine_names_the_feature_engines():
    # embed.engine is a params.yaml key (a Literal, so that every stage need not depend on tasks/backbones/): it
    # offers the engines that compute a backbone's features (tasks/backbones/feature_engine.py), which need not be
    # every engine that runs a model folder
    offered = get_args(EmbedParams.model_fields["engine"].annotation)
    assert offered == (names.AUTO, *feature_engine.PRECISIONS), (
        "tasks/params.py EmbedParams.engine must offer auto and the engines of tasks/backbones/feature_engine.py "
        "PRECISIONS")
