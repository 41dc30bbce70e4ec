"""The params.yaml sections as frozen typed models: unknown keys and out-of-range values are rejected; reads nothing."""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


# The networks train.model may name: auto (tasks/model_choice.py decides from the images), simple_cnn, a pretrained
# backbone whose ImageNet weights install with imgpipe (tasks/backbones/: a head trained on its cached features), or a
# keras.applications backbone trained on images (tasks/networks.py builds them).
ModelName = Literal["auto", "simple_cnn", "efficientnet_lite0", "efficientnet_lite2", "mobilenet_v3_small",
                    "efficientnet_v2_b0", "resnet50"]


class Section(BaseModel):
    """A params.yaml section: immutable, and a typo in a key is an error rather than a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseParams(Section):
    seed: int = Field(default=42, ge=0)


class PathsParams(Section):
    """Folders as written in params.yaml, relative to the project root."""

    demo: str = "data/demo/digits"
    raw: str = "data/raw"
    interim: str = "data/interim"
    processed: str = "data/processed"
    models: str = "data/models"
    reports: str = "data/reports"
    embeddings: str = "data/embeddings"


class IngestParams(Section):
    source: str = "data/demo/digits"
    layout: Literal["auto", "classes"] = "auto"  # auto: train/ val/ test/ folders of class folders keep their split
    labels: str | None = None  # a label table instead of class folders: csv:FILE or parquet:FILE (path, label, ...)
    follow_file_links: bool = False  # read links to files wherever they point (trees of links); folder links never
    max_pixels: int = Field(default=40_000_000, ge=1)
    # larger files are quarantined before a byte is read (a sparse or runaway file must not fill memory)
    max_file_bytes: int = Field(default=1_000_000_000, ge=1)
    min_side: int = Field(default=8, ge=1)
    on_label_conflict: Literal["quarantine", "fail"] = "quarantine"
    near_duplicate_distance: int = Field(default=4, ge=0, le=64)
    shard_megabytes: int = Field(default=256, ge=1)  # largest size of a raw store shard
    workers: int = Field(default=0, ge=0)
    scheduler: str | None = None  # a Dask scheduler address (tcp://host:8786) to examine files on a cluster


class ValidateParams(Section):
    expected_labels: tuple[str, ...] | None = None
    min_classes: int = Field(default=2, ge=2)
    max_classes: int = Field(default=1000, ge=2)  # more labels than this is refused (per-class outputs stay bounded)
    min_images_per_class: int = Field(default=10, ge=1)
    min_side: int = Field(default=8, ge=1)
    max_side: int = Field(default=20_000, ge=1)
    max_bad_fraction: float = Field(default=0.2, ge=0, le=1)
    warn_max_class_imbalance: float = Field(default=10.0, ge=1)
    # the health stage fails when more than this share of the images are likely label errors; null: never (it warns)
    max_label_issue_fraction: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _side_range(self) -> "ValidateParams":
        if self.min_side > self.max_side:
            raise ValueError(f"min_side ({self.min_side}) must be <= max_side ({self.max_side})")
        if self.min_classes > self.max_classes:
            raise ValueError(f"min_classes ({self.min_classes}) must be <= max_classes ({self.max_classes})")
        return self


class AugmentParams(Section):
    # auto: on (photos), but off when the source is the built-in demo (digits are not mirror-symmetric); decided
    # when params.yaml is loaded (Config), so every stage sees true or false
    horizontal_flip: bool | Literal["auto"] = True
    vertical_flip: bool = False
    rotation: float = Field(default=0.0, ge=0, le=1)
    zoom: float = Field(default=0.0, ge=0, lt=1)
    translation: float = Field(default=0.0, ge=0, lt=1)
    contrast: float = Field(default=0.0, ge=0, lt=1)
    brightness: float = Field(default=0.0, ge=0, lt=1)
    mixup: float = Field(default=0.0, ge=0, le=10)  # Beta(alpha, alpha) of the mixing weight; 0 = off
    cutmix: float = Field(default=0.0, ge=0, le=10)

    @model_validator(mode="after")
    def _one_mixing(self) -> "AugmentParams":
        if self.mixup > 0 and self.cutmix > 0:
            raise ValueError(f"at most one of mixup and cutmix may be > 0, got mixup={self.mixup} and "
                             f"cutmix={self.cutmix}; set one of them to 0")
        return self

    @property
    def mixing(self) -> bool:
        """Whether training labels become soft (one-hot, mixed) rather than class indices."""
        return self.mixup > 0 or self.cutmix > 0


class GroupBy(Section):
    """`preprocess.group_by`: images with the same key are one subject, and a subject stays in one split.

    Written in params.yaml as `folder:N` (the name of the N-th folder below the class folder; the same name
    under two classes is one subject) or `csv:FILE:COLUMN` (FILE has a `path` column, as in the manifest,
    and the subject in COLUMN; FILE is relative to the project root).
    """

    kind: Literal["folder", "csv"]
    level: int = Field(default=1, ge=1)
    csv: str = ""
    column: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return value
        kind, _, rest = str(value).strip().partition(":")
        if kind == "folder" and rest.strip().isdigit():
            return {"kind": "folder", "level": int(rest)}
        if kind == "csv" and ":" in rest:
            csv_file, _, column = rest.rpartition(":")  # the file name may hold a colon, the column may not
            if csv_file.strip() and column.strip():
                return {"kind": "csv", "csv": csv_file.strip(), "column": column.strip()}
        raise ValueError("must be null, 'folder:N' (N >= 1) or 'csv:FILE:COLUMN'")

    @model_validator(mode="after")
    def _complete(self) -> "GroupBy":
        if self.kind == "csv" and not (self.csv and self.column):
            raise ValueError("csv grouping needs both a file (csv) and a column")
        return self

    def __str__(self) -> str:
        return f"folder:{self.level}" if self.kind == "folder" else f"csv:{self.csv}:{self.column}"


class PreprocessParams(Section):
    # pixels per side after resizing, or auto: the median short side of the images, clamped to 32..auto_max_size
    # and rounded to a multiple of 16 (chosen by preprocess, recorded in data/processed/preprocess.json)
    image_size: Annotated[int, Field(ge=8, le=1024)] | Literal["auto"] = "auto"
    # the largest size auto picks for simple_cnn: 64 suits it trained from scratch on a CPU (at 160 px it learnt
    # nothing from 284 photos); a pretrained backbone takes its own size
    auto_max_size: int = Field(default=64, ge=32, le=1024)
    # auto: crop for a pretrained backbone (the centre square, as ImageNet networks saw photos: 0.77 against 0.74
    # test macro-F1 for stretch with EfficientNet-Lite0's features of the clothing photos), stretch for a network
    # trained from scratch
    resize: Literal["auto", "stretch", "crop", "pad"] = "auto"  # auto, or one of tasks/images.py's RESIZE_MODES
    val_fraction: float = Field(default=0.15, gt=0, lt=1)
    test_fraction: float = Field(default=0.15, gt=0, lt=1)
    shard_megabytes: int = Field(default=128, ge=1)
    workers: int = Field(default=0, ge=0)
    scheduler: str | None = None  # a Dask scheduler address (tcp://host:8786) to decode on a cluster
    group_by: GroupBy | None = None
    augment: AugmentParams = AugmentParams()

    @model_validator(mode="after")
    def _fractions(self) -> "PreprocessParams":
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1, got {self.val_fraction} + {self.test_fraction}"
            )
        return self


class FineTuneParams(Section):
    """Second phase of transfer learning: the top layers of a pretrained backbone trained on images at a lower rate.

    `when`: auto tries it where the head on frozen features leaves room on validation and keeps it only when it
    scores better there, within `max_minutes` of CPU; always runs it; never keeps the backbone frozen. Written in
    params.yaml as a section, or as the bare word (`fine_tune: never`).
    """

    when: Literal["auto", "always", "never"] = "auto"
    epochs: int = Field(default=8, ge=1)
    unfreeze_layers: int = Field(default=20, ge=1)
    learning_rate: float = Field(default=1e-4, gt=0, le=1)
    max_minutes: float = Field(default=10.0, gt=0)  # of CPU time (all cores); the epochs that fit are run
    # auto tries it only with at least this many training images per class: with fewer, a head on frozen features
    # is what transfers best (the clothing photos, 28 per class: +0.004 validation macro-F1 for 3 minutes of CPU)
    min_images_per_class: int = Field(default=50, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _from_word(cls, value: Any) -> Any:
        return {"when": value} if isinstance(value, str) else value


class EmbedParams(Section):
    """The embed stage: a pretrained backbone's features of every image, computed once (cached by content)."""

    workers: int = Field(default=0, ge=0)  # processes; 0 = one per core
    scheduler: str | None = None  # a Dask scheduler address (tcp://host:8786) to compute features on a cluster
    engine: Literal["auto", "keras", "onnxruntime", "openvino"] = "auto"  # auto: the fastest that agrees with Keras


class HealthParams(Section):
    """The health stage: likely label errors, near-duplicates by meaning and outliers, from the cached features."""

    folds: int = Field(default=5, ge=2, le=20)  # k of the k-fold fit that gives out-of-fold probabilities
    duplicate_cosine: float = Field(default=0.97, gt=0, le=1)  # near-duplicates: features at least this similar
    outlier_spread: float = Field(default=6.0, gt=0)  # outliers: robust z-score of the distance to every class centroid
    max_fit_images: int = Field(default=20_000, ge=100)  # each fold's head is fitted on at most this many (sampled)
    top_shown: int = Field(default=24, ge=0, le=200)  # likely label errors drawn in label_issues.png (the run report)
    # drift: a warning (health log, gate.json) when the centre of a class's new images moved more than this many of
    # the class's spreads from its centre at the last run (tasks/health/drift.py)
    drift_warning: float = Field(default=0.5, gt=0)


# What export.formats may name: the candidate's exports (tasks/export/ writes them).
ExportName = Literal["saved_model", "onnx", "openvino", "litert"]
# train keys that the export section took over (train.exports -> export.formats), refused with their new name
MOVED_TO_EXPORT = {"exports": "formats", "int8_calibration": "int8_calibration"}


class TrainParams(Section):
    model: ModelName = "auto"
    # auto: the installed ImageNet weights for a backbone that ships them (efficientnet_lite*), none otherwise;
    # null (random), `imagenet` (installed, or through Keras's download cache) or a local no-top weights file
    weights: str | None = "auto"
    epochs: int = Field(default=30, ge=1)
    batch_size: int | Literal["auto"] = "auto"  # auto: 64, or smaller so that an epoch has enough steps
    select_on: Literal["macro_f1", "accuracy", "loss"] = "macro_f1"  # the kept epoch; val_loss breaks ties
    min_epochs: int = Field(default=10, ge=1)  # early stopping never stops a phase before this many epochs
    learning_rate: float = Field(default=0.002, gt=0, le=1)
    schedule: Literal["cosine", "plateau", "constant"] = "cosine"
    warmup_epochs: int = Field(default=1, ge=0)
    depth: int = Field(default=3, ge=1, le=8)
    width: int = Field(default=32, ge=1, le=1024)  # bounded: a huge width would be killed for memory without a word
    dropout: float = Field(default=0.2, ge=0, lt=1)
    patience: int = Field(default=5, ge=1)
    fine_tune: FineTuneParams = FineTuneParams()
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = "auto"
    jit_compile: Literal["auto", "true", "false"] = "auto"
    deterministic: bool = False
    # auto: multi_label when any image has several labels (a label cell "a;b"), else single_label
    task: Literal["auto", "single_label", "multi_label"] = "auto"
    # balanced: each class (label) weighs in the loss inversely to its share of the training images
    class_weight: Literal["none", "balanced"] = "none"
    # balanced: training batches drawn with every class equally likely (tf.data rejection resampling; single-label)
    sampling: Literal["natural", "balanced"] = "natural"

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, values: Any) -> Any:
        if isinstance(values, dict):
            for old, new in MOVED_TO_EXPORT.items():
                if old in values:
                    raise ValueError(f"{old} is now export.{new}: the export stage writes the exports apart from "
                                     f"training (an edit to them no longer retrains the model); move the key to the "
                                     f"export section of params.yaml as {new}")
        return values

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError("must be a whole number >= 1 or auto")

    @model_validator(mode="after")
    def _fine_tune_needs_weights(self) -> "TrainParams":
        if self.fine_tune.when == "always" and self.weights is None:
            raise ValueError("fine_tune.when: always needs pretrained weights (train.weights); "
                             "from random weights the whole backbone trains from the start")
        return self


class ExportParams(Section):
    """The export stage: the candidate's exports, each held to its Keras model (data/models/candidate_exports/)."""

    formats: tuple[ExportName, ...] = ("saved_model", "onnx")
    # training images that calibrate the int8 model; 0: none; auto: 256, but none for a pretrained EfficientNet-Lite,
    # whose int8 copies agreed with it on only 92-97% of the clothing photos (the engines need 99%)
    int8_calibration: int | Literal["auto"] = "auto"

    @field_validator("int8_calibration", mode="before")
    @classmethod
    def _int8_calibration(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return value
        raise ValueError("must be a whole number >= 0 (0: no int8 model) or auto")


class GateParams(Section):
    """When a candidate may replace the production model (the champion)."""

    metric: Literal["accuracy", "macro_f1"] = "macro_f1"
    tolerance: float = Field(default=0.02, ge=0, le=1)
    max_class_f1_drop: float = Field(default=0.10, ge=0, le=1)  # judged only where production is credible:
    min_production_class_f1: float = Field(default=0.5, ge=0, le=1)  # its F1 on the class at least this
    min_accuracy: float = Field(default=0.6, ge=0, le=1)
    min_macro_f1: float = Field(default=0.5, ge=0, le=1)
    max_export_difference: float = Field(default=1e-4, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, values: Any) -> Any:
        if isinstance(values, dict) and "max_recall_drop" in values:
            raise ValueError("max_recall_drop is now max_class_f1_drop: the gate judges each class's F1 (recall "
                             "alone rewards a model that gives one class to every image); rename the key")
        return values


class EvaluateParams(Section):
    top_k: int = Field(default=3, ge=1)
    gate: GateParams = GateParams()


class PruneParams(Section):
    """`tune.prune`: stop a hopeless trial early, by the median rule."""

    after_epoch: int | None = Field(default=None, ge=1)  # null: never stop a trial early
    min_trials: int = Field(default=3, ge=1)  # earlier trials that must have reached after_epoch first


class TuneParams(Section):
    """`imgpipe tune`: a sweep of DVC experiments. `space` maps dotted params keys to a list of values or a range
    ({low, high, scale: linear | log, count}); tasks/tune/space.py checks it against the other sections."""

    method: Literal["random", "grid"] = "random"
    trials: int = Field(default=10, ge=1)  # random: how many trials to draw
    seed: int = Field(default=0, ge=0)  # random: which trials are drawn
    max_trials: int = Field(default=20, ge=1)  # budget: never more trials than this (a grid included)
    max_minutes: float | None = Field(default=None, gt=0)  # budget: no trial starts after this; null: no limit
    objective: Literal["val_accuracy", "val_loss"] = "val_accuracy"  # at the kept epoch; never the test split
    space: dict[str, Any] = Field(default_factory=dict)
    prune: PruneParams = PruneParams()


class Config(Section):
    base: BaseParams = BaseParams()
    paths: PathsParams = PathsParams()
    ingest: IngestParams = IngestParams()
    validate_: ValidateParams = Field(default=ValidateParams(), alias="validate")
    preprocess: PreprocessParams = PreprocessParams()
    embed: EmbedParams = EmbedParams()
    health: HealthParams = HealthParams()
    train: TrainParams = TrainParams()
    export: ExportParams = ExportParams()
    evaluate: EvaluateParams = EvaluateParams()
    tune: TuneParams = TuneParams()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _decide_auto_flip(cls, values: Any) -> Any:
        """horizontal_flip: auto -> on, unless the source is the built-in demo (digits are not mirror-symmetric)."""
        if not isinstance(values, dict):
            return values
        augment = ((values.get("preprocess") or {}).get("augment") or {})
        if not isinstance(augment, dict) or augment.get("horizontal_flip") != "auto":
            return values
        source = (values.get("ingest") or {}).get("source", IngestParams().source)
        demo = (values.get("paths") or {}).get("demo", PathsParams().demo)
        decided = os.path.normpath(str(source)) != os.path.normpath(str(demo))
        preprocess = {**values["preprocess"], "augment": {**augment, "horizontal_flip": decided}}
        return {**values, "preprocess": preprocess}

    @property
    def validation(self) -> ValidateParams:
        """The `validate` section (named so because `validate` is a pydantic method)."""
        return self.validate_
