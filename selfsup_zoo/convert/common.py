"""What the per-method converters share: the result type, key-prefix handling, and the catalog
look-ups that tell which architecture and which catalog checkpoint a converted file is."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import catalog
from ..errors import ArchitectureMismatchError, ConversionError
from ..shapes import check_state_dict, compare_keys, expected_shapes

__all__ = [
    "Conversion",
    "strip_prefix",
    "entry_for_method",
    "match_architecture",
    "infer_checkpoint",
    "resolve_checkpoint_name",
    "state_dict_keys",
]


@dataclass
class Conversion:
    """An official checkpoint mapped to timm keys, with what was learnt on the way."""

    state_dict: dict[str, torch.Tensor]
    arch: str  # zoo architecture, e.g. "care_resnet50"
    checkpoint: str | None  # catalog name (given, or inferred when unambiguous)
    candidates: list[str]  # catalog names the file may be, when not inferred
    num_classes: int
    notes: list[str] = field(default_factory=list)  # what was picked and dropped, for the report
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def timm_arch(self) -> str:
        return catalog.default_entry(self.arch).timm_arch


def strip_prefix(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Keys starting with ``prefix``, with it removed (other keys dropped)."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def state_dict_keys(obj: object) -> set[str]:
    """The string keys of ``obj`` and of the dicts directly inside it (where files keep weights).

    Args:
        obj: a loaded checkpoint.

    Returns:
        Keys of the top level and of every dict value one level down (``model``, ``student``...).
    """
    if not isinstance(obj, dict):
        return set()
    keys = {k for k in obj if isinstance(k, str)}
    for value in obj.values():
        if isinstance(value, dict):
            keys.update(k for k in value if isinstance(k, str))
    return keys


def entry_for_method(checkpoint: str, method: str) -> catalog.CatalogEntry:
    """The catalog entry ``checkpoint``, refused when it belongs to the other method."""
    entry = catalog.get_entry(checkpoint)
    if entry.method != method:
        raise ConversionError(
            f"--checkpoint {entry.name} is a {entry.method.upper()} checkpoint, but this is "
            f"the {method} converter: use `python -m selfsup_zoo.convert {entry.method} ...`."
        )
    return entry


def _method_archs(method: str) -> list[str]:
    return [a for a in catalog.architectures() if catalog.default_entry(a).method == method]


def _mismatch_count(state_dict: Mapping[str, torch.Tensor], arch: str, num_classes: int) -> int:
    """Missing + unexpected + mis-shaped keys of ``state_dict`` against ``arch``'s timm model."""
    expected = expected_shapes(catalog.default_entry(arch).timm_arch, num_classes)
    return sum(map(len, compare_keys(state_dict, expected)))


def match_architecture(
    state_dict: Mapping[str, torch.Tensor],
    method: str,
    num_classes: int,
    what: str,
    checkpoint: str | None = None,
) -> str:
    """The zoo architecture whose timm keys and shapes ``state_dict`` matches exactly.

    Args:
        state_dict: timm keys -> tensors, as converted.
        method: ``"care"`` or ``"sere"``: the architectures tried.
        num_classes: classifier size of ``state_dict`` (0: none).
        what: how messages name the file.
        checkpoint: a catalog name: the architecture must be that entry's; a mismatch names the
            offending keys and, when the file is another architecture of ``method``, that one.

    Returns:
        The zoo architecture, e.g. ``"sere_vit_small"``.

    Raises:
        ConversionError: ``checkpoint`` is another method's, or has another classifier size.
        ArchitectureMismatchError: no architecture fits; the message describes the closest one.
    """
    archs = _method_archs(method)
    if checkpoint is not None:
        entry = entry_for_method(checkpoint, method)
        if entry.num_classes != num_classes:
            raise ConversionError(
                f"{what} {'has' if num_classes else 'has no'} classifier "
                f"(num_classes={num_classes}) but {entry.name} has num_classes={entry.num_classes}."
            )
        try:
            check_state_dict(
                state_dict,
                expected_shapes(entry.timm_arch, num_classes),
                what=what,
                target=f"{entry.name} (timm {entry.timm_arch})",
            )
        except ArchitectureMismatchError as e:
            actual = [a for a in archs if _mismatch_count(state_dict, a, num_classes) == 0]
            if not actual:
                raise
            raise ArchitectureMismatchError(
                f"{e}\n  The file is a {actual[0]} (timm "
                f"{catalog.default_entry(actual[0]).timm_arch}), not a {entry.arch}: pass one of "
                f"{', '.join(row.name for row in catalog.entries_for(actual[0]))} as --checkpoint."
            ) from None
        return entry.arch
    scored = []
    for arch in archs:
        bad = _mismatch_count(state_dict, arch, num_classes)
        if bad == 0:
            return arch
        scored.append((bad, arch))
    closest = min(scored)[1]
    try:
        check_state_dict(
            state_dict,
            expected_shapes(catalog.default_entry(closest).timm_arch, num_classes),
            what=what,
            target=f"any {method.upper()} architecture; closest is {closest}",
        )
    except ArchitectureMismatchError as e:
        raise ArchitectureMismatchError(
            f"{e}\n  Known {method.upper()} architectures: {', '.join(archs)}."
        ) from None
    raise AssertionError("unreachable: a mismatch was counted")  # pragma: no cover


def infer_checkpoint(
    arch: str, num_classes: int, epochs: int | None
) -> tuple[str | None, list[str]]:
    """Catalog name for a converted file: unique match on epochs, else the only official row."""
    rows = [e for e in catalog.entries_for(arch) if e.num_classes == num_classes]
    if epochs is not None:
        by_epochs = [e for e in rows if e.epochs == epochs]
        if len(by_epochs) == 1:
            return by_epochs[0].name, [by_epochs[0].name]
    official = [e for e in rows if e.upstream == catalog.OFFICIAL]
    if len(official) == 1 and (epochs is None or official[0].epochs == epochs):
        return official[0].name, [e.name for e in rows]
    return None, [e.name for e in rows]


def resolve_checkpoint_name(
    checkpoint: str | None, arch: str, num_classes: int, epochs: int | None
) -> tuple[str | None, list[str]]:
    """The given ``--checkpoint`` (full catalog name), else :func:`infer_checkpoint`."""
    if checkpoint:
        name = catalog.get_entry(checkpoint).name
        return name, [name]
    return infer_checkpoint(arch, num_classes, epochs)
