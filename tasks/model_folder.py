"""The model folder format: writes and reads model.keras, labels.json, model_card.json, history.csv, the exports,
engines.json, and version.json in a copy of a registry version (the production folder).

The one owner of the folder that train writes (data/models/candidate/, without exports: the export stage writes
them beside it, tasks/export_folder.py) and that promotion copies, joined with its exports, into the registry and
production. A model's version id is the first 12 hex digits of a hash of its weights file and its
label list (and, for a multi-label model, its per-label thresholds); it is written into the model card and is the name of the model in the registry, in history.jsonl and
in every prediction row. The version id covers model.keras, labels.json and thresholds.json; checksums.json
(tasks/model_checksums.py) covers the rest that predict may run: the exports and engines.json. Keras is imported only where a model is saved or loaded, so
that commands which only move folders start fast.
"""

from __future__ import annotations

import functools
import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks import atomic, model_checksums
from tasks.hashing import file_sha256
from tasks.images import RESIZE_MODES

if TYPE_CHECKING:
    import keras
    import pandas as pd

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
CARD_FILE = "model_card.json"
# multi-label models only: {label: threshold}, a label is given when its sigmoid probability >= its threshold
THRESHOLDS_FILE = "thresholds.json"
SINGLE_LABEL, MULTI_LABEL = "single_label", "multi_label"
HISTORY_FILE = "history.csv"
SAVED_MODEL_FOLDER = "saved_model"
REQUIRED_FILES = (MODEL_FILE, LABELS_FILE, CARD_FILE)


@dataclass(frozen=True)
class ExportFormat:
    """One export.formats value: the export registry entry (its writer is tasks/export/convert.py WRITERS[name])."""

    path: str  # where it is written inside the folder
    packages: tuple[str, ...]  # the packages writing it needs (import names, pip installs them by the same name)
    # what runs it at fp32 for the gate's export parity, the first one installed: an engine of
    # tasks/engines/names.py, or "module:Class" of a runner taking (path, classes)
    checked_by: tuple[str, ...]


# the export registry: export.formats -> its entry (an ONNX int8 model, calibrated on training images, is written
# beside the ONNX export; engines.json records how each engine and precision did on the test split)
EXPORTS = {
    "saved_model": ExportFormat(SAVED_MODEL_FOLDER, (), ("tasks.engines.keras_engine:SavedModelRunner",)),
    "onnx": ExportFormat("model.onnx", ("onnx", "tf2onnx"), ("onnxruntime", "openvino")),
    "openvino": ExportFormat("openvino/model.xml", ("onnx", "tf2onnx", "openvino"), ("openvino",)),
    "litert": ExportFormat("model.tflite", (), ("tasks.engines.keras_engine:LiteRtRunner",)),
}
EXPORT_PATHS = {name: entry.path for name, entry in EXPORTS.items()}
INT8_ONNX_FILE = "model.int8.onnx"
ENGINES_FILE = "engines.json"
# in a copy of a registry version (the production folder), written by promotion: {"version": the version it copies}
VERSION_FILE = "version.json"
RESTORE = model_checksums.RESTORE


@dataclass(frozen=True)
class ModelInfo:
    """What using a model needs to know, read without loading the model."""

    folder: Path
    labels: tuple[str, ...]
    image_size: int
    resize: str
    version: str
    task: str = SINGLE_LABEL  # multi_label: sigmoid outputs, one threshold per label
    thresholds: tuple[float, ...] | None = None  # multi-label only, in the order of labels

    @property
    def multi_label(self) -> bool:
        return self.task == MULTI_LABEL


def exists(folder: Path) -> bool:
    """Whether `folder` holds a saved model."""
    return (folder / MODEL_FILE).is_file()


def compute_version(folder: Path) -> str:
    """The version id of the model saved in `folder`: a hash of the weights file, the label list and (multi-label)
    the thresholds, so that new thresholds make a new version."""
    names = (MODEL_FILE, LABELS_FILE) + ((THRESHOLDS_FILE,) if (folder / THRESHOLDS_FILE).is_file() else ())
    combined = "".join(file_sha256(folder / name) for name in names)
    return hashlib.sha256(combined.encode()).hexdigest()[:12]


def write(folder: Path, network: keras.Model, labels: list[str], card: dict[str, Any],
          history: pd.DataFrame, thresholds: list[float] | None = None) -> str:
    """Save a trained model, its labels, (multi-label) thresholds, training history and card (with the version id
    added) into `folder`.

    `folder` is a new, empty folder (train builds it under a temporary name and renames it into place).
    Returns the version id.
    """
    network.save(folder / MODEL_FILE)
    atomic.write_json(folder / LABELS_FILE, labels)
    if thresholds is not None:
        if len(thresholds) != len(labels):
            raise ValueError(f"{len(thresholds)} thresholds for {len(labels)} labels")
        atomic.write_json(folder / THRESHOLDS_FILE, {label: float(value) for label, value in zip(labels, thresholds)})
    history.to_csv(folder / HISTORY_FILE, index=False)
    version = compute_version(folder)
    atomic.write_json(folder / CARD_FILE, {**card, "labels": labels, "version": version})
    # the exports are the export stage's (tasks/export/, in a folder of their own): promotion joins them in
    model_checksums.seal(folder, version_of(folder))
    return version


def export_path(folder: Path, name: str) -> Path:
    """Where the export `name` (an export.formats value, or `int8` for the int8 ONNX model) lives in `folder`."""
    return folder / (INT8_ONNX_FILE if name == "int8" else EXPORT_PATHS[name])


def write_engines(folder: Path, record: dict[str, Any]) -> None:
    """Write engines.json into a whole model folder and record the checksums of all of it."""
    atomic.write_json(folder / ENGINES_FILE, record)
    model_checksums.seal(folder, version_of(folder))


def write_installed_version(folder: Path, version: str) -> None:
    """Record in `folder`, a copy of registry/<version> being built, which registry version it is a copy of."""
    atomic.write_json(folder / VERSION_FILE, {"version": version})


def read_installed_version(folder: Path) -> str | None:
    """The registry version `folder` is a copy of (its version.json), or None when it records none or cannot be
    read."""
    try:
        version = json.loads((folder / VERSION_FILE).read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) else None


def read_engines(folder: Path) -> dict[str, Any] | None:
    """What the export stage measured of each engine and precision on the test split; None for a folder without
    it (the candidate folder, whose exports are apart)."""
    if not (folder / ENGINES_FILE).is_file():
        return None
    record = _read_json(folder / ENGINES_FILE)
    if model_checksums.exists(folder):  # engines.json decides which export runs: it must be the one written
        model_checksums.check_files(folder, [ENGINES_FILE])
    if not isinstance(record, dict) or not isinstance(record.get("engines"), list):
        raise ValueError(f"{folder / ENGINES_FILE}: must be a JSON object with an 'engines' list; the export stage "
                         "writes it")
    return record


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: missing; the model folder {path.parent} is incomplete") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: unreadable ({error}); the model folder {path.parent} is damaged") from None


def read_card(folder: Path) -> dict[str, Any]:
    card = _read_json(folder / CARD_FILE)
    if not isinstance(card, dict):
        raise ValueError(f"{folder / CARD_FILE}: must be a JSON object")
    return card


def read_kept_epoch(folder: Path) -> dict[str, Any] | None:
    """The card's record of the epoch train kept (phase, 1-based epoch, selected_on); None without a card."""
    if not (folder / CARD_FILE).is_file():
        return None
    record = read_card(folder).get("validation")
    return record if isinstance(record, dict) else None


def read_labels(folder: Path) -> list[str]:
    labels = _read_json(folder / LABELS_FILE)
    if not isinstance(labels, list) or not labels or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"{folder / LABELS_FILE}: must be a JSON list of label names")
    return labels


def read_thresholds(folder: Path, labels: list[str]) -> tuple[float, ...] | None:
    """A multi-label model's threshold per label, in the order of `labels`; None for a single-label model."""
    if not (folder / THRESHOLDS_FILE).is_file():
        return None
    record = _read_json(folder / THRESHOLDS_FILE)
    if not isinstance(record, dict) or set(record) != set(labels) or not all(
            isinstance(value, (int, float)) and 0 <= value <= 1 for value in record.values()):
        raise ValueError(f"{folder / THRESHOLDS_FILE}: must map each label of {LABELS_FILE} to a threshold in 0..1")
    return tuple(float(record[label]) for label in labels)


def read_history(folder: Path) -> pd.DataFrame:
    import pandas as pd

    return pd.read_csv(folder / HISTORY_FILE)


def version_of(folder: Path) -> str:
    """The version id recorded in the model card (computed for a folder written before cards carried one)."""
    version = read_card(folder).get("version")
    return version if isinstance(version, str) and version else compute_version(folder)


def read_info(folder: Path) -> ModelInfo:
    """Check a model folder and read what prediction needs from it, without loading the model."""
    folder = folder.expanduser().resolve()
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder}: not a model folder, {', '.join(missing)} missing; the train stage writes one "
                         f"(data/models/candidate/), with {', '.join(REQUIRED_FILES)}")
    labels, card = read_labels(folder), read_card(folder)
    image_size, resize = card.get("image_size"), card.get("resize")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"{folder / CARD_FILE}: image_size must be a positive integer, got {image_size!r}")
    if resize not in RESIZE_MODES:
        raise ValueError(f"{folder / CARD_FILE}: resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    thresholds = read_thresholds(folder, labels)
    task = card.get("task", SINGLE_LABEL)
    if (task == MULTI_LABEL) != (thresholds is not None):
        raise ValueError(f"{folder}: {CARD_FILE} says task {task}, but {THRESHOLDS_FILE} is "
                         f"{'present' if thresholds is not None else 'missing'}; train writes both together")
    return ModelInfo(folder, tuple(labels), image_size, resize, version_of(folder), task, thresholds)


ARCHIVE_MEMBERS = ("config.json", "model.weights.h5")  # what every .keras zip archive holds


def _check_archive(model_file: Path) -> dict[str, Any]:
    """The model's config from its .keras archive; a ValueError saying the file is damaged when it is not whole."""
    damaged = (f"{model_file}: damaged, {{}}; a .keras model is a zip archive of {', '.join(ARCHIVE_MEMBERS)} and "
               "metadata.json, and this one may have been cut short by a full disk or an interrupted copy. Retrain "
               "it (`dvc repro train`) or restore it (`dvc checkout`, `dvc pull`)")
    size = model_file.stat().st_size
    if size == 0:
        raise ValueError(damaged.format("empty (0 bytes)"))
    try:
        with zipfile.ZipFile(model_file) as archive:
            missing = [name for name in ARCHIVE_MEMBERS if name not in archive.namelist()]
            if missing:
                raise ValueError(damaged.format(f"{', '.join(missing)} missing from the archive"))
            corrupt = archive.testzip()
            if corrupt is not None:
                raise ValueError(damaged.format(f"{corrupt} in the archive fails its checksum"))
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, EOFError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(damaged.format(f"not a readable zip archive of {size:,} bytes ({error})")) from None
    return config if isinstance(config, dict) else {}


def _unsafe_parts(config: Any) -> list[str]:
    """What in a saved model's config safe mode refuses to load: Lambda layers and classes Keras does not define."""
    found: list[str] = []
    if isinstance(config, dict):
        name = (config.get("config") or {}).get("name") if isinstance(config.get("config"), dict) else None
        if config.get("class_name") == "Lambda":
            found.append(f"a Lambda layer{f' ({name!r})' if name else ''}, which holds Python code")
        elif "registered_name" in config and "module" in config and \
                not str(config["module"] or "").startswith(("keras", "builtins")):
            found.append(f"the class {config.get('registered_name') or config.get('class_name')!r}, which Keras "
                         "does not define (custom code)")
        for value in config.values():
            found += _unsafe_parts(value)
    elif isinstance(config, list):
        for value in config:
            found += _unsafe_parts(value)
    return list(dict.fromkeys(found))


@functools.lru_cache(maxsize=4)
def _load(model_file: Path, version: str) -> keras.Model:
    import keras

    config = _check_archive(model_file)
    try:
        return keras.saving.load_model(model_file, safe_mode=True, compile=False)
    except (TypeError, ValueError) as error:
        unsafe = _unsafe_parts(config)
        if unsafe:
            raise ValueError(f"{model_file}: refused by Keras safe mode, which imgpipe always loads models in so that "
                             f"a model file cannot run code: it contains {'; '.join(unsafe)}. Use a model built from "
                             "Keras layers and keras.ops only, as the train stage builds them") from None
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{model_file}: Keras cannot load it in safe mode: {first_line}") from None


def load(folder: Path) -> keras.Model:
    """The Keras model saved in `folder` (safe mode: no arbitrary code), loaded once per process and version."""
    if not exists(folder):
        raise ValueError(f"{folder / MODEL_FILE}: no saved model; the train stage writes one")
    return _load((folder / MODEL_FILE).resolve(), compute_version(folder))


def check_unchanged(info: ModelInfo) -> None:
    """Refuse a model.keras (or labels, thresholds) that is not the version `info` read: changed during the run
    (run again), or damaged or replaced while its card still names the old version (restore or retrain)."""
    if compute_version(info.folder) == info.version:
        return
    model_file = info.folder / MODEL_FILE
    if model_file.is_file():
        _check_archive(model_file)  # a truncated or empty file: say it is damaged
    if version_of(info.folder) != info.version:
        raise ValueError(f"{model_file}: the model changed during the run (version is no longer {info.version}); "
                         "run again to use the new model")
    raise ValueError(f"{model_file}: not the model its {CARD_FILE} names ({info.version}): it, {LABELS_FILE} or "
                     f"{THRESHOLDS_FILE} was changed or damaged after train wrote them; {RESTORE}")


def load_checked(info: ModelInfo) -> keras.Model:
    """The model of `info`, refused when it changed since `info` was read or disagrees with its card and labels."""
    check_unchanged(info)
    network = load(info.folder)
    input_shape, output_shape = tuple(network.input_shape), tuple(network.output_shape)
    if input_shape[1:] != (info.image_size, info.image_size, 3) or output_shape[-1] != len(info.labels):
        raise ValueError(f"{info.folder}: model takes {input_shape} and gives {output_shape}, but {CARD_FILE} and "
                         f"{LABELS_FILE} say {info.image_size}x{info.image_size}x3 images and "
                         f"{len(info.labels)} labels")
    return network
