"""Registry of pre-training methods, imported lazily so that the engine and the recipes load
without the (heavier) method modules, and a recipe naming one method never imports the other."""

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
    "validate_method_config",
]

# kind -> (module, method class, config dataclass)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "care": ("selfsup_zoo.training.methods.care", "CareMethod", "CareConfig"),
    "sere": ("selfsup_zoo.training.methods.sere", "SereMethod", "SereConfig"),
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


def validate_method_config(kind: str, table: dict[str, Any]) -> None:
    """Raise ValueError naming any key of ``[method]`` that the method's config does not have."""
    cfg_cls = _config_class_or_none(kind)
    if cfg_cls is None or not dataclasses.is_dataclass(cfg_cls):
        return
    names = [f.name for f in dataclasses.fields(cfg_cls)]
    for key in table:
        if key not in names:
            from selfsup_zoo.training.recipe import unknown_key_error

            raise unknown_key_error(f"key 'method.{key}'", key, names, f"valid keys for {kind}")


def build_config(kind: str, table: dict[str, Any]) -> Any:
    _, cfg_cls = method_classes(kind)
    validate_method_config(kind, table)
    return cfg_cls(**table)


def build_method(kind: str, table: dict[str, Any]) -> Method:
    """Instantiate a method from its recipe table (``[method]`` without ``kind``)."""
    method_cls, _ = method_classes(kind)
    return method_cls(build_config(kind, table))
