"""Registry of methods (pre-training, and the evaluation jobs run on the engine), imported
lazily so that the engine and the recipes load without the (heavier) method modules, and a recipe
naming one method never imports the other.

This module imports neither the recipes nor the engine (both import it): a recipe checks its
``[method]`` keys against :func:`config_fields`, and its own error says which key is wrong.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from selfsup_zoo.training.methods.base import Method, StepInfo

__all__ = [
    "Method",
    "StepInfo",
    "available_methods",
    "method_classes",
    "build_method",
    "config_fields",
    "validate_method_config",
]

# kind -> (module, method class, config dataclass)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "care": ("selfsup_zoo.training.methods.care", "CareMethod", "CareConfig"),
    "sere": ("selfsup_zoo.training.methods.sere", "SereMethod", "SereConfig"),
    # Evaluation jobs that run on the same engine (frozen-encoder probes, fine-tuning).
    "linear": ("selfsup_zoo.evaluation.linear_probe", "LinearProbe", "LinearProbeConfig"),
    "finetune": ("selfsup_zoo.evaluation.finetune_method", "FineTune", "FineTuneConfig"),
}


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def method_classes(kind: str) -> tuple[type[Method], type]:
    """(method class, config dataclass) for a method kind."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown method {kind!r}; available: {', '.join(available_methods())}")
    module_name, cls_name, cfg_name = _REGISTRY[kind]
    module = importlib.import_module(module_name)
    return getattr(module, cls_name), getattr(module, cfg_name)


def _config_class_or_none(kind: str) -> type | None:
    try:
        return method_classes(kind)[1]
    except ModuleNotFoundError as e:
        # Only tolerate the method module itself being absent (e.g. a partial checkout); a
        # missing dependency inside it is a real error.
        if e.name == _REGISTRY[kind][0]:
            return None
        raise


def config_fields(kind: str) -> list[str] | None:
    """Field names of a method's config dataclass (the valid ``[method]`` keys besides ``kind``);
    None when the method's module is absent from this checkout (nothing to check against)."""
    cfg_cls = _config_class_or_none(kind)
    if cfg_cls is None or not dataclasses.is_dataclass(cfg_cls):
        return None
    return [f.name for f in dataclasses.fields(cfg_cls)]


def validate_method_config(kind: str, table: dict[str, Any]) -> None:
    """Raise ValueError naming any key of ``[method]`` that the method's config does not have."""
    names = config_fields(kind)
    if names is None:
        return
    unknown = [key for key in table if key not in names]
    if unknown:
        raise ValueError(
            f"unknown key 'method.{unknown[0]}'; valid keys for {kind}: {', '.join(names)}"
        )


def build_config(kind: str, table: dict[str, Any]) -> Any:
    """The method's config dataclass from its recipe table; ValueError on an unknown key."""
    _, cfg_cls = method_classes(kind)
    validate_method_config(kind, table)
    return cfg_cls(**table)


def build_method(kind: str, table: dict[str, Any]) -> Method:
    """Instantiate a method from its recipe table (``[method]`` without ``kind``)."""
    method_cls, _ = method_classes(kind)
    return method_cls(build_config(kind, table))
