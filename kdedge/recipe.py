"""Typed recipes: the one place where YAML strings become types.

Everything is validated at load, before any work starts. A bad recipe gives one line naming the file,
the field path (e.g. ``teacher.model.depth``) and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kdedge.errors import KdedgeError
from kdedge.options import options_schema

class _Strict(BaseModel):
    # strict: "5" is not an int and 1 is not a bool; YAML already gives real types
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataConfig(BaseModel):
    """Which dataset, where it lives, and how the validation split is cut.

    Keys other than the ones below are the dataset loader's own options (e.g. ``image_size`` for
    ``image_folder``); they are checked against the loader's signature.
    """

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    dataset: str = Field(description="registered dataset name (kdedge list datasets)")
    root: Optional[Path] = Field(None, strict=False, description="directory holding the dataset files")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of train held out for validation")
    split_seed: int = Field(0, ge=0, description="seed of the stratified train/validation split")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ModelSpec(BaseModel):
    """A registered model name plus its keyword arguments (checked against its signature)."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    name: str = Field(description="registered model name (kdedge list models)")

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimizerConfig(_Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (ignored by adamw)")
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0, lt=1)


class ScheduleConfig(_Strict):
    name: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up from lr/100, in epochs")
    milestones: list[int] = Field(default_factory=list, description="step schedule: epochs where lr *= gamma")
    gamma: float = Field(0.1, gt=0, le=1)


UNHASHED_TRAIN_FIELDS = ("eval_every",)


class TrainConfig(_Strict):
    """One model's training budget. Cross-field rules are checked in `_check_schedule`."""

    epochs: int = Field(ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=65_536)
    eval_batch_size: int = Field(1000, ge=1, le=65_536)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augment: bool = Field(True, description="random crop (+ flip where the dataset allows it)")
    crop_padding: int = Field(2, ge=0, le=16)
    channels_last: bool = Field(True, description="NHWC memory format for conv nets (faster on CPU)")
    eval_every: int = Field(1, ge=1, le=10_000, description="evaluate val and test every N epochs and after the "
                            "last (long schedules on small transfer sets spend most of their time evaluating); "
                            "the trained weights do not depend on it")

    @model_validator(mode="after")
    def _check_schedule(self) -> "TrainConfig":
        sched = self.schedule
        if sched.warmup_epochs > self.epochs:
            raise ValueError(f"schedule.warmup_epochs ({sched.warmup_epochs}) is longer than epochs ({self.epochs})")
        if sched.milestones and sched.name != "step":
            raise ValueError(f"schedule.milestones only apply to name: step (this schedule is {sched.name})")
        ms = list(sched.milestones)
        if ms and (ms != sorted(set(ms)) or ms[0] < 1 or ms[-1] >= self.epochs):
            raise ValueError(f"schedule.milestones must be increasing epochs in 1..{self.epochs - 1}, got {ms}")
        return self


class RoleConfig(_Strict):
    """A model to be trained: its architecture and its training budget."""

    model: ModelSpec
    train: TrainConfig


class TeacherConfig(_Strict):
    """The teacher: trained here (model + train), or taken from another run's finished teacher."""

    model: Optional[ModelSpec] = None
    train: Optional[TrainConfig] = None
    calibrate: bool = Field(False, description="fit the teacher's temperature T* on the validation split "
                                               "before distilling (implied by temperature: calibrated)")
    from_run: Optional[Path] = Field(None, strict=False,
                                     description="reuse the finished teacher of this run directory (same data); "
                                                 "its model and training are read from that run")

    @model_validator(mode="after")
    def _check(self) -> "TeacherConfig":
        if self.from_run is None and (self.model is None or self.train is None):
            raise ValueError("the teacher needs model: and train:, or from_run: a run directory with a trained teacher")
        return self


class LossSpec(BaseModel):
    """A registered loss, its weight in the sum, and its own options (checked against its params)."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    name: str = Field(description="registered loss name: hinton, dkd, hint")
    weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="weight of this term in the total loss")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ReducedTransfer(_Strict):
    per_class: int = Field(ge=1, description="images kept per class (stratified)")
    seed: int = Field(0, ge=0)


class TransferConfig(_Strict):
    """The images the student learns from: the training split, a reduced one, or an unlabeled one."""

    reduced: Optional[ReducedTransfer] = None
    unlabeled: bool = Field(False, description="drop the labels: the teacher's outputs are the only targets")
    pseudo_labels: bool = Field(False, description="unlabeled only: use the teacher's argmax as hard labels")

    @model_validator(mode="after")
    def _check(self) -> "TransferConfig":
        if self.pseudo_labels and not self.unlabeled:
            raise ValueError("pseudo_labels only applies with unlabeled: true")
        return self


class DistillConfig(_Strict):
    losses: list[LossSpec] = Field(min_length=1, description="summed with their weights")
    transfer: TransferConfig = TransferConfig()
    baseline: bool = Field(True, description="also train the same student on hard labels only (no KD)")
    cache_teacher: bool = Field(True, description="compute teacher outputs once when inputs are not augmented")

    @model_validator(mode="after")
    def _check_weights(self) -> "DistillConfig":
        if all(loss.weight == 0 for loss in self.losses):
            raise ValueError("every distillation loss has weight 0; give at least one a positive weight")
        return self


class SweepConfig(_Strict):
    """One student per value of one recipe field (seed 001: accuracy vs temperature)."""

    set: str = Field(pattern=r"^(student|distill)\.[A-Za-z0-9_.\[\]]+$",
                     description="dotted field path under student. or distill., e.g. distill.losses[0].temperature")
    values: list[Any] = Field(min_length=1, max_length=100)
    ensemble: bool = Field(False, description="also vote the sweep's students as an ensemble (majority, mean-prob, best-k)")
    mc_dropout: int = Field(0, ge=0, le=10_000,
                            description="MC-dropout passes on the teacher and every sweep student, with MUPE and "
                                        "overlaid MC reliability curves (seed 000's uncertainty transfer); 0 = off")


class QuantConfig(_Strict):
    """Quantized distillation (QAT-KD): the student trained again under INT8 fake quantization."""

    mode: Literal["qat"] = Field(description="qat: quantization-aware training with the KD losses")
    backend: Literal["modelopt"] = Field(description="modelopt: NVIDIA Model Optimizer fake quant "
                                                     "(pip install 'kdedge[modelopt]')")
    init: Literal["student", "scratch"] = Field("student", description="student: fine-tune the fp32 KD student; "
                                                                        "scratch: a fresh student from random init")
    calib_images: int = Field(512, gt=0, le=1_000_000,
                              description="training images (class-balanced) that calibrate the activation ranges")
    train: TrainConfig | None = Field(None, description="default: init student -> the student's budget with "
                                                           "epochs // 4 (at least 1), lr / 10, no warm-up; "
                                                           "init scratch -> the student's budget")

    def resolve_train(self, student: TrainConfig) -> TrainConfig:
        """The QAT training budget: `train` when given, else derived from the student's."""
        if self.train is not None:
            return self.train
        if self.init == "scratch":
            return student
        # Fine-tuning an already trained net: a short run at a small lr keeps it near the fp32 optimum.
        epochs = max(1, student.epochs // 4)
        raw = student.model_dump()
        raw["epochs"] = epochs
        raw["optimizer"]["lr"] = student.optimizer.lr / 10
        raw["schedule"]["warmup_epochs"] = 0.0
        scaled = {m * epochs // student.epochs for m in student.schedule.milestones}
        raw["schedule"]["milestones"] = sorted(scaled & set(range(1, epochs)))
        return TrainConfig.model_validate(raw)


class ExportConfig(_Strict):
    """Defaults of `kdedge export` for this recipe's runs (command-line options override them)."""

    min_agreement: float = Field(0.99, ge=0, le=1, description="parity gate: least top-1 agreement of an INT8 "
                                                                "export with its fp32 model on the test split")
    max_accuracy_drop: float = Field(0.005, ge=0, le=1, description="parity gate: largest test accuracy drop "
                                                                    "(0.005 = 0.5 pt)")
    calib_images: int = Field(512, gt=0, le=1_000_000, description="real training images (class-balanced) "
                                                                    "that calibrate INT8 scales")
    calib_method: Literal["minmax", "percentile", "entropy"] = "minmax"


# Sections that only add experiments in their own sub-directories; they do not change what the
# teacher, student and baseline are, so they are left out of the run-compatibility hash. (quant:
# is fingerprinted by its own stage instead, so adding it keeps a finished teacher and student;
# export: holds settings of `kdedge export`, recorded beside each artifact.)
EXPERIMENT_SECTIONS = ("sweep", "assistants", "chain", "symmetry", "quant", "export")


class Recipe(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100,
                      description="run name: outputs go to <output_dir>/<name>")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    output_dir: Path = Field(Path("runs"), strict=False)
    data: DataConfig
    teacher: TeacherConfig
    student: Optional[RoleConfig] = None
    distill: Optional[DistillConfig] = None
    sweep: Optional[SweepConfig] = None
    assistants: dict[str, RoleConfig] = Field(default_factory=dict,
                                              description="extra models for chains, by name")
    chain: Optional[list[str]] = Field(None, min_length=3, description="teacher -> assistant(s) -> student")
    symmetry: bool = Field(False, description="distil the trained student back into an untrained teacher copy")
    quant: QuantConfig | None = Field(None, description="also train the student under INT8 fake quantization "
                                                           "(QAT-KD) into <run>/student_qat")
    export: ExportConfig | None = Field(None, description="parity-gate thresholds and INT8 calibration for "
                                                          "`kdedge export`")

    @model_validator(mode="after")
    def _check_roles(self) -> "Recipe":
        if self.distill is not None and self.student is None:
            raise ValueError("distill needs a student: section (model + train)")
        if self.quant is not None and self.distill is None:
            # both inits train with the KD losses; init student also starts from the KD student
            raise ValueError(f"quant (init: {self.quant.init}) needs a distill: section and a student: "
                             "(it trains the student under fake quantization with the KD losses)")
        if (self.sweep or self.chain or self.symmetry) and self.distill is None:
            raise ValueError("sweep, chain and symmetry need a distill: section")
        if (self.chain or self.symmetry) and any(loss.name == "hint" for loss in self.distill.losses):
            raise ValueError("chain and symmetry distil between other architectures than teacher -> student, "
                             "so their hint paths would not apply; use logit losses (hinton, dkd) with them")
        if self.chain is not None:
            if self.chain[0] != "teacher" or self.chain[-1] != "student":
                raise ValueError(f"chain must start with teacher and end with student, got {self.chain}")
            for name in self.chain[1:-1]:
                if name not in self.assistants:
                    defined = ", ".join(self.assistants) or "none"
                    raise ValueError(f"chain refers to {name!r}, which is not defined under assistants: "
                                     f"(defined: {defined})")
        return self

    def uses_calibrated_temperature(self) -> bool:
        return self.distill is not None and any(
            loss.options.get("temperature") == "calibrated" for loss in self.distill.losses)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def hash(self) -> str:
        """Hash of what the teacher, student and baseline depend on: formatting, comments, key order,
        where the run is written (output_dir) and the experiment sections do not change it."""
        content = {k: v for k, v in self.to_dict().items() if k not in ("output_dir", *EXPERIMENT_SECTIONS)}
        canonical = json.dumps(without_unhashed(content), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def without_unhashed(obj: Any) -> Any:
    """`obj` without the training fields that leave the trained weights unchanged (UNHASHED_TRAIN_FIELDS),
    at any depth, so setting them neither invalidates a finished run nor blocks resuming one."""
    if isinstance(obj, dict):
        return {k: without_unhashed(v) for k, v in obj.items() if k not in UNHASHED_TRAIN_FIELDS}
    if isinstance(obj, list):
        return [without_unhashed(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------- loading


def load_recipe(path: str | Path, *, require_runs: bool = True) -> Recipe:
    """Read and validate a recipe. With require_runs=False a teacher.from_run that is not trained yet
    is accepted (only `recipe check` and tests do that); everything else is still checked."""
    path = Path(path)
    if not path.is_file():
        raise KdedgeError(f"{path}: recipe file not found; give the path of a YAML recipe (see recipes/)")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_RecipeLoader)  # a SafeLoader
    except _DuplicateKey as exc:
        raise KdedgeError(f"{path}: line {exc.line}: key {exc.key!r} appears twice; keep one") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise KdedgeError(f"{path}:{where}: not valid YAML ({problem}); fix the syntax") from None
    except UnicodeDecodeError:
        raise KdedgeError(f"{path}: not a UTF-8 text file; give a YAML recipe") from None
    return recipe_from_dict(raw, source=str(path), base_dir=path.parent, require_runs=require_runs)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line = key, line


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (last-one-wins hides typos) and reads 1e-3 as a float
    (YAML 1.1 needs a dot, so `lr: 1e-3` would otherwise be the string "1e-3")."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def recipe_from_dict(raw: Any, *, source: str = "<recipe>", base_dir: Path | None = None,
                     require_runs: bool = True) -> Recipe:
    if not isinstance(raw, dict):
        raise KdedgeError(f"{source}: a recipe must be a YAML mapping (name:, data:, teacher:, ...), "
                          f"got {type(raw).__name__}")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise KdedgeError(f"{source}: {_describe(exc)}") from None
    if recipe.teacher.from_run is not None:
        try:
            recipe = _teacher_from_run(recipe, source)
        except KdedgeError:
            if require_runs or recipe.teacher.model is not None:
                raise
    _check_registered(recipe, source)
    if recipe.data.root is not None and base_dir is not None and not recipe.data.root.is_absolute():
        # A relative data root is relative to the recipe file, so a recipe works from any cwd.
        recipe = recipe.model_copy(update={"data": recipe.data.model_copy(
            update={"root": (base_dir / recipe.data.root).resolve()})})
    if recipe.data.root is not None and not recipe.data.root.is_dir():
        raise KdedgeError(f"{source}: data.root: directory {recipe.data.root} does not exist; "
                          f"create it and put the {recipe.data.dataset} files there, or remove data.root")
    return recipe


def _teacher_from_run(recipe: Recipe, source: str) -> Recipe:
    """Fill teacher.model/train from the run named by teacher.from_run (whose teacher must be finished)."""
    root = recipe.teacher.from_run
    manifest_path = root / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        theirs = manifest["recipe"]["teacher"]
        finished = manifest.get("stages", {}).get("teacher", {}).get("status") == "complete"
    except (OSError, ValueError, KeyError, TypeError):
        raise KdedgeError(f"{source}: teacher.from_run: {root} is not a kdedge run with a teacher "
                          f"(no readable {manifest_path}); train it first with `kdedge train`") from None
    if not finished:
        raise KdedgeError(f"{source}: teacher.from_run: the teacher in {root} is not finished; "
                          "finish it with `kdedge train <its recipe> --resume`")
    mine = recipe.teacher
    for key in ("model", "train"):
        given = getattr(mine, key)
        if given is not None and without_unhashed(given.model_dump(mode="json")) != without_unhashed(theirs[key]):
            raise KdedgeError(f"{source}: teacher.{key}: differs from the teacher of {root}; "
                              f"remove teacher.{key} (it is read from that run) or drop from_run")
    try:
        teacher = TeacherConfig.model_validate({**theirs, "calibrate": mine.calibrate, "from_run": str(root)})
    except ValidationError as exc:
        raise KdedgeError(f"{manifest_path}: teacher: {_describe(exc)}") from None
    return recipe.model_copy(update={"teacher": teacher})


def _describe(exc: ValidationError) -> str:
    """One line for the first error: field path, problem, allowed values."""
    errors = exc.errors()
    err = errors[0]
    loc = [str(p) for p in err["loc"]]
    field = _dotted(err["loc"])
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(Recipe, err["loc"][:-1])
        msg = f"{field}: unknown key; allowed keys here: {', '.join(allowed)}"
    elif err["type"] == "missing":
        msg = f"{field}: required field is missing"
    elif err["type"] == "value_error":  # a cross-field rule: its message says it all
        msg = f"{field}: {err['msg'].removeprefix('Value error, ')}"
    else:
        msg = f"{field}: {err['msg']} (got {err.get('input')!r})" if loc else err["msg"]
    more = len(errors) - 1
    return msg + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, str) and any(c in part for c in "-[( "):
            continue  # pydantic's union-member tags (e.g. 'constrained-float'), not recipe fields
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "recipe"


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return []
        current = _unwrap_optional(current.model_fields[part].annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


# ------------------------------------------------------------------------------- registry-backed specs


def _check_registered(recipe: Recipe, source: str) -> None:
    from kdedge.data import DATASETS
    from kdedge.data.base import FIXED as DATASET_FIXED
    from kdedge.models import FIXED as MODEL_FIXED
    from kdedge.models import MODELS

    _check_options(DATASETS, recipe.data.dataset, recipe.data.options, DATASET_FIXED,
                   "data", "dataset", source, own_keys=list(DataConfig.model_fields))
    roles = [("teacher", recipe.teacher)] + ([("student", recipe.student)] if recipe.student else [])
    roles += [(f"assistants.{name}", cfg) for name, cfg in recipe.assistants.items()]
    for role, cfg in roles:
        if cfg.model is None:
            continue  # a teacher.from_run not trained yet (recipe check only)
        kwargs = _check_options(MODELS, cfg.model.name, cfg.model.kwargs, MODEL_FIXED,
                                f"{role}.model", "name", source, own_keys=["name"])
        _check_model_values(cfg.model.name, kwargs, f"{role}.model", source)
    if recipe.distill is not None:
        _check_losses(recipe, source)
    if recipe.sweep is not None:
        for value in recipe.sweep.values:
            try:
                # a teacher.from_run not trained yet (recipe check only) is not required of the points either
                sweep_point(recipe, value, require_runs=recipe.teacher.model is not None)
            except KdedgeError as exc:
                raise KdedgeError(f"{source}: sweep.values: {value!r} for {recipe.sweep.set}: "
                                  f"{exc.message.removeprefix('<sweep point>: ')}") from None


def _check_losses(recipe: Recipe, source: str) -> None:
    from kdedge.features import validate_paths
    from kdedge.losses import LOSSES

    labeled = not recipe.distill.transfer.unlabeled or recipe.distill.transfer.pseudo_labels
    for i, spec in enumerate(recipe.distill.losses):
        path = f"distill.losses[{i}]"
        if spec.name not in LOSSES:
            raise KdedgeError(f"{source}: {path}.name: unknown loss {spec.name!r}; available: {', '.join(LOSSES.names())}")
        loss = LOSSES.get(spec.name)
        try:
            params = loss.params.model_validate(spec.options)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = f"{path}.{_dotted(err['loc'])}"
            if err["type"] == "extra_forbidden":
                allowed = ["name", "weight", *loss.params.model_fields]
                raise KdedgeError(f"{source}: {field}: unknown key for loss {spec.name!r}; "
                                  f"allowed: {', '.join(allowed)}") from None
            raise KdedgeError(f"{source}: {field}: {err['msg']} (got {err.get('input')!r})") from None
        if loss.needs_labels and not labeled:
            raise KdedgeError(f"{source}: {path}.name: loss {spec.name!r} needs labels but distill.transfer is "
                              "unlabeled; set distill.transfer.pseudo_labels: true or use hinton")
        if loss.kind == "features":
            for side, role in (("student", recipe.student), ("teacher", recipe.teacher)):
                if role.model is None:
                    continue
                try:
                    validate_paths(_meta_model(role.model), [getattr(params, side)])
                except KdedgeError as exc:
                    raise KdedgeError(f"{source}: {path}.{side}: {exc}") from None


_PATH_PART = re.compile(r"([A-Za-z0-9_]+)((?:\[\d+\])*)")


def set_field(raw: dict, path: str, value: Any) -> dict:
    """A copy of `raw` with the dotted field `path` (list items as name[i]) set to `value`."""
    import copy

    out = copy.deepcopy(raw)
    node: Any = out
    parts = path.split(".")
    for n, part in enumerate(parts):
        match = _PATH_PART.fullmatch(part)
        if not match:
            raise KdedgeError(f"{path}: {part!r} is not a field name")
        key, indices = match.group(1), [int(i) for i in re.findall(r"\d+", match.group(2))]
        last = n == len(parts) - 1 and not indices
        if isinstance(node, dict) and node.get(key) is None and not last and not indices:
            node[key] = {}  # an optional section left out (e.g. distill.transfer.reduced): create it
        if not isinstance(node, dict) or (key not in node and not last):
            raise KdedgeError(f"{path}: no field {key!r} at that place in the recipe")
        if last:
            node[key] = value
            return out
        node = node[key]
        for j, i in enumerate(indices):
            if not isinstance(node, list) or i >= len(node):
                raise KdedgeError(f"{path}: {key} has no item [{i}]")
            if n == len(parts) - 1 and j == len(indices) - 1:
                node[i] = value
                return out
            node = node[i]
    return out


def parse_sweep_values(spec: str) -> list[Any]:
    """'1:20' (inclusive, step 1), '0.1:0.9:0.2', or a comma list '1,2,4,8' (items read as YAML scalars)."""
    parts = spec.split(":")
    if len(parts) in (2, 3) and "," not in spec:
        try:
            nums = [yaml.load(p, Loader=_RecipeLoader) for p in parts]
        except yaml.YAMLError:
            nums = []
        if nums and all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in nums):
            start, stop, step = nums[0], nums[1], nums[2] if len(nums) == 3 else 1
            if step <= 0 or stop < start:
                raise KdedgeError(f"--set: range {spec!r} needs start <= stop and a positive step")
            count = int(round((stop - start) / step)) + 1
            values = [start + i * step for i in range(count)]
            return [int(v) if all(isinstance(n, int) for n in nums) else round(v, 10) for v in values]
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if not items:
        raise KdedgeError(f"--set: no values in {spec!r}; write e.g. 1:20 or 1,2,4,8")
    return [yaml.load(item, Loader=_RecipeLoader) for item in items]


def with_sweep(recipe: Recipe, assignment: str, *, ensemble: bool, source: str, mc_dropout: int = 0) -> Recipe:
    """The recipe with its sweep: block replaced by FIELD=VALUES from the command line."""
    field, sep, spec = assignment.partition("=")
    if not sep:
        raise KdedgeError(f"--set {assignment!r}: write FIELD=VALUES, e.g. distill.losses[0].temperature=1:20")
    raw = recipe.to_dict()
    raw["sweep"] = {"set": field.strip(), "values": parse_sweep_values(spec), "ensemble": ensemble,
                    "mc_dropout": mc_dropout}
    return recipe_from_dict(raw, source=source)


def sweep_point(recipe: Recipe, value: Any, *, require_runs: bool = True) -> Recipe:
    """The recipe of one sweep point: the swept field set, the experiment sections dropped."""
    raw = {k: v for k, v in recipe.to_dict().items() if k not in EXPERIMENT_SECTIONS}
    return recipe_from_dict(set_field(raw, recipe.sweep.set, value), source="<sweep point>",
                            require_runs=require_runs)


def _meta_model(spec: ModelSpec):
    import torch

    from kdedge.models import build_model

    with torch.device("meta"):
        return build_model(spec.name, in_channels=3, num_classes=10, image_size=32, **spec.kwargs)


def _check_options(registry, name: str, options: dict, fixed: frozenset, path: str, name_key: str,
                   source: str, own_keys: list[str]) -> dict[str, Any]:
    """Validate a registered function's options (the spec's extra keys) against its signature."""
    if name not in registry:
        raise KdedgeError(f"{source}: {path}.{name_key}: unknown {registry.kind} {name!r}; "
                          f"available: {', '.join(registry.names())}")
    schema = options_schema(registry.get(name), fixed)
    try:
        return schema.model_validate(options).model_dump()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = f"{path}.{_dotted(err['loc'])}"
        if err["type"] == "extra_forbidden":
            allowed = own_keys + [f"{k} ({registry.kind} option)" for k in schema.model_fields]
            raise KdedgeError(f"{source}: {field}: unknown key for {registry.kind} {name!r}; "
                              f"allowed: {', '.join(allowed)}") from None
        raise KdedgeError(f"{source}: {field}: {err['msg']} (got {err.get('input')!r})") from None


def _check_model_values(name: str, kwargs: dict[str, Any], path: str, source: str) -> None:
    """Build the model on the meta device (no memory, no compute) so value errors surface at load."""
    import torch

    from kdedge.models import build_model
    from kdedge.models.base import ModelConfigError

    try:
        with torch.device("meta"):
            build_model(name, in_channels=3, num_classes=10, image_size=32, **kwargs)
    except ModelConfigError as exc:
        raise KdedgeError(f"{source}: {path}.{exc.field}: {exc}") from None


# ------------------------------------------------------------------------------------- JSON schema


def recipe_json_schema() -> dict[str, Any]:
    """JSON schema for editors, with the registered model and dataset names as enums."""
    from kdedge.data import DATASETS
    from kdedge.models import MODELS

    schema = Recipe.model_json_schema()
    defs = schema.get("$defs", {})
    defs["ModelSpec"]["properties"]["name"]["enum"] = MODELS.names()
    defs["DataConfig"]["properties"]["dataset"]["enum"] = DATASETS.names()
    return schema
