"""Training recipes: nested dataclasses read from TOML, validated, overridable, saved as JSON.

A recipe file is named like the catalog checkpoint it regenerates
(``care_resnet50.in1k_ep100.toml``) and lives in ``selfsup_zoo/training/recipes/`` (package
data). Layout::

    name = "care_resnet50.in1k_ep100"    # defaults to the file name
    checkpoint = "care_resnet50.in1k_ep100"  # catalog entry it regenerates ("" for smoke recipes)
    description = "..."
    [method]   kind = "care", then the method's own config fields (CareConfig / SereConfig)
    [data]     DataConfig      ([data.view_args] = keyword arguments of the views class)
    [engine]   EngineConfig
    [optim]    OptimConfig
    [ema]      EmaConfig
    [export]   ExportConfig
    [eval]     EvalConfig      (evaluation folders and schedule: ``training/eval_config.py``)

Every key is checked: an unknown key is an error naming it and listing the valid ones. Any field can
be overridden with ``key.path=value`` strings (values parsed as TOML, e.g. ``engine.epochs=2``,
``data.mean=[0.5,0.5,0.5]``, ``optim.name="adamw"`` or ``optim.name=adamw``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from selfsup_zoo import catalog
from selfsup_zoo.errors import closest
from selfsup_zoo.training.eval_config import EvalConfig
from selfsup_zoo.training.methods import available_methods, config_fields

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found]  # the backport, absent on 3.11+

logger = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

__all__ = [
    "DataConfig",
    "EngineConfig",
    "OptimConfig",
    "EmaConfig",
    "ExportConfig",
    "EvalConfig",
    "MethodSpec",
    "Recipe",
    "RecipeError",
    "load_recipe",
    "list_recipes",
    "apply_overrides",
    "recipe_from_dict",
    "toml_string",
]


class RecipeError(ValueError):
    """A recipe that cannot be used as written (unknown key, wrong type, bad value, unknown
    name)."""


@dataclass
class DataConfig:
    # "" = must be given on the command line (--data-root); "embedded:digits" = the bundled set.
    root: str = ""
    # views class: "care" -> CareViews, "sere" -> SereViews, "labelled" -> LabelledCrop (one
    # random-resized crop + flip and the label: linear probes), "timm" -> TimmTrainView (timm's
    # create_transform: fine-tuning)
    views: str = "care"
    view_args: dict[str, Any] = field(default_factory=dict)
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    workers: int = 6
    pin_memory: bool = True
    persistent_workers: bool = True
    prefetch_factor: int = 2
    strict: bool = False  # True: a corrupt image is an error instead of being replaced and counted
    cache_dir: str = ""  # where embedded sets are unpacked ("" = the library's default)
    # Size the official run saw (ImageNet-1k train: 1,281,167); only used to report iterations per
    # epoch in dry runs and to warn when the data found differs. 0 = unknown.
    expected_images: int = 0
    # Fraction of each class held out of training (seeded by holdout_seed, stratified; see
    # ``selfsup_zoo.training.data.holdout``): a validation split carved from the training folder.
    holdout: float = 0.0
    holdout_seed: int = 0


@dataclass
class EngineConfig:
    epochs: int = 100
    global_batch: int = 1024
    # Images per device per micro-batch; 0 = global_batch / world_size (no accumulation).
    # accum = global_batch / (world_size * per_device_batch) is derived at run time.
    per_device_batch: int = 0
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 uses a GradScaler)
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    ckpt_every_steps: int = 0  # 0 = only at epoch ends and at the end of the run
    keep_last: int = 3
    log_every: int = 50
    max_steps: int = (
        0  # stop after this many global steps (schedules keep the full horizon); 0 = all
    )
    device: str = "auto"  # auto | cpu | cuda
    dist_backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    cudnn_benchmark: bool = True
    # glibc malloc keeps freed memory for the next step instead of unmapping it (allocator.py; on
    # in the ImageNet recipes, where it pays; a smoke run is ~7 % slower with it)
    keep_freed_memory: bool = False
    tensorboard: bool = True  # used when torch.utils.tensorboard is importable
    progress: bool = True
    export_at_end: bool = True
    # Epochs (1-based) after which the run calls its epoch hook (an evaluation), if it was given
    # one (``train(..., epoch_hook=...)``); empty = never.
    eval_epochs: list[int] = field(default_factory=list)

    def batch_layout(self, world_size: int) -> tuple[int, int]:
        """(per-device micro-batch, accumulation steps) of the global batch on ``world_size``
        processes; a ValueError when it does not split evenly."""
        micro = self.per_device_batch or self.global_batch // world_size
        if micro <= 0 or self.global_batch % (world_size * micro):
            raise ValueError(
                f"global batch {self.global_batch} cannot be split over {world_size} "
                f"processes x per-device batch {micro}"
            )
        return micro, self.global_batch // (world_size * micro)


def linear_scaled_lr(base_lr: float, global_batch: int) -> float:
    """The peak learning rate: ``base_lr`` is per 256 images (the linear scaling rule)."""
    return base_lr * global_batch / 256.0


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    base_lr: float = 0.05  # per 256 images: peak lr = base_lr * global_batch / 256
    lr_schedule: str = "warmcos"  # warmcos (CARE) | cosine (iBOT/SERE) | constant
    warmup_epochs: float = 10.0
    warmup_start_lr: float = 1e-6
    min_lr: float = 0.0
    momentum: float = 0.9  # SGD
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW
    eps: float = 1e-8
    weight_decay: float = 1e-4
    weight_decay_end: float | None = None  # None = constant weight decay
    clip_grad: float = 0.0
    clip_mode: str = "none"  # per_param | global | none
    impl: str = "default"  # default | foreach | fused (CUDA) | for_loop


@dataclass
class EmaConfig:
    momentum_base: float = 0.99
    # The teacher update after step k uses momentum[k + index_offset]: CARE 1 (its EMA runs at the
    # start of step k+1 with m(k+1)), SERE 0.
    index_offset: int = 1


@dataclass
class ExportConfig:
    # timm architecture and kwargs written to config.json. "" = the catalog entry's (when the recipe
    # names a checkpoint), else the method's backbone.
    architecture: str = ""
    model_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodSpec:
    kind: str = "care"
    config: dict[str, Any] = field(default_factory=dict)  # the method's config dataclass fields


@dataclass
class Recipe:
    name: str
    method: MethodSpec
    checkpoint: str = ""
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # ----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["method"] = {"kind": self.method.kind, **self.method.config}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        return recipe_from_dict(json.loads(text))

    def peak_lr(self) -> float:
        return linear_scaled_lr(self.optim.base_lr, self.engine.global_batch)


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------
_CHOICES: dict[str, tuple[str, ...]] = {
    "engine.precision": ("fp32", "bf16", "fp16"),
    "engine.device": ("auto", "cpu", "cuda"),
    "engine.dist_backend": ("auto", "nccl", "gloo"),
    "optim.name": ("sgd", "adamw"),
    "optim.lr_schedule": ("warmcos", "cosine", "constant"),
    "optim.clip_mode": ("per_param", "global", "none"),
    "optim.impl": ("default", "foreach", "fused", "for_loop"),
    "data.views": ("care", "sere", "labelled", "timm"),
}


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently coerce: int -> float) a TOML/JSON value against a field's annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, where)
            except RecipeError as e:
                errors.append(str(e))
        raise RecipeError(errors[0] if errors else f"{where}: bad value {value!r}")
    if tp is Any:
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_check_type(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where}: expected a string, got {value!r}")
        return value
    raise RecipeError(f"{where}: unsupported field type {tp}")


def unknown_key_error(
    what: str, key: str, valid: typing.Sequence[str], valid_label: str
) -> RecipeError:
    """``unknown <what> (did you mean '<closest>'?); <valid_label>: <valid, ...>``."""
    close = closest(key, valid, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return RecipeError(f"unknown {what}{hint}; {valid_label}: {', '.join(valid)}")


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    if not isinstance(table, dict):
        raise RecipeError(f"[{where}] must be a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in table.items():
        if key not in names:
            raise unknown_key_error(f"key '{where}.{key}'", key, names, f"valid keys in [{where}]")
        full = f"{where}.{key}"
        v = _check_type(value, hints[key], full)
        if full in _CHOICES and v not in _CHOICES[full]:
            raise RecipeError(f"{full} = {v!r} is not one of {', '.join(_CHOICES[full])}")
        kwargs[key] = v
    return cls(**kwargs)


_SECTIONS = {
    "data": DataConfig,
    "engine": EngineConfig,
    "optim": OptimConfig,
    "ema": EmaConfig,
    "export": ExportConfig,
    "eval": EvalConfig,
}
_TOP = ("name", "checkpoint", "description", "method", *_SECTIONS)


def recipe_from_dict(d: dict[str, Any], default_name: str = "") -> Recipe:
    """Build and validate a recipe from a TOML/JSON table."""
    for key in d:
        if key not in _TOP:
            raise unknown_key_error(f"top-level key '{key}'", key, _TOP, "valid")
    if "method" not in d or not isinstance(d["method"], dict) or "kind" not in d["method"]:
        raise RecipeError('a recipe needs a [method] table with kind = "care" or "sere"')
    method_table = dict(d["method"])
    kind = method_table.pop("kind")
    if kind not in available_methods():
        raise RecipeError(f"method.kind = {kind!r} is not one of {', '.join(available_methods())}")
    valid = config_fields(kind)
    unknown = [key for key in method_table if valid is not None and key not in valid]
    if valid is not None and unknown:
        raise unknown_key_error(
            f"key 'method.{unknown[0]}'", unknown[0], valid, f"valid keys for {kind}"
        )
    sections = {k: _build(cls, d.get(k, {}), k) for k, cls in _SECTIONS.items()}
    recipe = Recipe(
        name=_check_type(d.get("name", default_name), str, "name"),
        checkpoint=_check_type(d.get("checkpoint", ""), str, "checkpoint"),
        description=_check_type(d.get("description", ""), str, "description"),
        method=MethodSpec(kind=kind, config=method_table),
        **sections,
    )
    _check_values(recipe)
    return recipe


def _check_values(r: Recipe) -> None:
    e, o = r.engine, r.optim
    if not r.name:
        raise RecipeError("the recipe has no name")
    if e.epochs <= 0 or e.global_batch <= 0:
        raise RecipeError("engine.epochs and engine.global_batch must be positive")
    if e.per_device_batch < 0 or (e.per_device_batch and e.global_batch % e.per_device_batch):
        raise RecipeError(
            f"engine.per_device_batch ({e.per_device_batch}) must divide engine.global_batch "
            f"({e.global_batch})"
        )
    if len(r.data.mean) != 3 or len(r.data.std) != 3:
        raise RecipeError("data.mean and data.std need 3 values (RGB)")
    if o.clip_mode != "none" and o.clip_grad <= 0:
        raise RecipeError(f"optim.clip_mode = {o.clip_mode!r} needs optim.clip_grad > 0")
    if len(o.betas) != 2:
        raise RecipeError("optim.betas needs 2 values")
    if r.ema.index_offset not in (0, 1):
        raise RecipeError("ema.index_offset must be 0 (SERE) or 1 (CARE)")
    if not 0.0 <= r.data.holdout < 1.0:
        raise RecipeError(f"data.holdout = {r.data.holdout} must be in [0, 1)")
    if any(e_ < 1 for e_ in e.eval_epochs):
        raise RecipeError(f"engine.eval_epochs {e.eval_epochs}: epochs are 1-based")
    for problem in r.eval.problems():
        raise RecipeError(problem)
    pretraining = ("care", "sere")
    if r.method.kind in pretraining and r.data.views != r.method.kind:
        logger.warning("data.views = %r with method %r", r.data.views, r.method.kind)


# --------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------
def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # bare words are strings: optim.name=adamw


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string: the value side of a ``key=value`` override."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings to a recipe table (a copy); validation happens when building."""
    out: dict[str, Any] = json.loads(json.dumps(d))
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} is not of the form key.path=value")
        path, text = item.split("=", 1)
        keys = [k for k in path.strip().split(".") if k]
        if not keys:
            raise RecipeError(f"override {item!r} has an empty key")
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise RecipeError(f"override {item!r}: {k!r} is not a table")
        node[keys[-1]] = _parse_value(text.strip())
    return out


# --------------------------------------------------------------------------------------------------
# Lookup
# --------------------------------------------------------------------------------------------------
def _recipe_dir() -> Any:
    return resources.files("selfsup_zoo.training") / "recipes"


def list_recipes() -> list[str]:
    """Names of the shipped recipe files (without ``.toml``), sorted."""
    return sorted(
        p.name[: -len(".toml")] for p in _recipe_dir().iterdir() if p.name.endswith(".toml")
    )


def _catalog_recipe_name(name: str) -> str | None:
    try:
        entry = catalog.get_entry(name)
    except (LookupError, ValueError):
        return None
    return getattr(entry, "recipe", None)


def load_recipe_table(name_or_path: str) -> tuple[dict[str, Any], str]:
    """The raw TOML table of a recipe name, catalog checkpoint name or ``.toml`` path, and its
    name."""
    p = Path(name_or_path)
    if name_or_path.endswith(".toml") or p.is_file():
        if not p.is_file():
            raise RecipeError(f"recipe file {name_or_path} does not exist")
        with p.open("rb") as f:
            return tomllib.load(f), p.name[: -len(".toml")] if p.name.endswith(".toml") else p.name
    names = list_recipes()
    name = name_or_path
    if name not in names:
        via_catalog = _catalog_recipe_name(name)
        if via_catalog and via_catalog in names:
            name = via_catalog
        else:
            close = closest(name_or_path, names)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise RecipeError(
                f"unknown checkpoint or recipe {name_or_path!r}.{hint}\n"
                f"Available: {', '.join(names)}"
            )
    with (_recipe_dir() / f"{name}.toml").open("rb") as f:
        return tomllib.load(f), name


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """Load, override and validate a recipe."""
    table, default_name = load_recipe_table(name_or_path)
    if overrides:
        table = apply_overrides(table, overrides)
    return recipe_from_dict(table, default_name=default_name)
