"""Build the frozen model an evaluation protocol measures, with a clear error for a wrong name.

``MODEL`` is anything ``timm.create_model`` accepts once ``selfsup_zoo`` is imported: a catalog
name (``care_resnet50``, ``care_resnet50.in1k_ep100``), a plain timm name (``resnet50``,
``resnet50.a1_in1k``), ``local-dir:<hub folder>`` or ``hf-hub:<repo>``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import parse_model_name
from timm.models._hub import load_model_config_from_hf, load_model_config_from_path
from torch import nn

import selfsup_zoo  # noqa: F401  (registers the zoo's architectures with timm)
from selfsup_zoo import catalog
from selfsup_zoo.errors import closest

logger = logging.getLogger(__name__)

__all__ = ["EvaluationError", "create_eval_model", "source_architecture"]


class EvaluationError(ValueError):
    """Bad input to an evaluation (model, folders, options); the message says what to do."""


def _check_name(name: str) -> None:
    source, rest = parse_model_name(name)
    if source == "local-dir":
        folder = Path(rest).expanduser()
        if not (folder / "config.json").is_file():
            raise EvaluationError(
                f"{name!r}: {folder} is not a hub folder (no config.json); give "
                "local-dir:<folder> with the config.json and model.safetensors that "
                "`python -m selfsup_zoo.training.export` or `reproduce` writes"
            )
        return
    if source == "hf-hub" or timm.is_model(name):
        return
    arch = name.partition(".")[0]
    close = closest(arch, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise EvaluationError(
        f"unknown model {name!r}.{hint} Give a timm or zoo name (list them with "
        "`python -c \"import timm, selfsup_zoo; print(timm.list_models('*resnet*'))\"`), "
        "local-dir:<hub folder> or hf-hub:<repo>"
    )


def create_eval_model(
    name: str, *, random_init: bool = False, seed: int = 0, num_classes: int = 0, **kwargs: Any
) -> nn.Module:
    """The model with its weights (or random ones), eval mode; pooled output by default.

    Args:
        name: see the module docstring.
        random_init: skip the weights (the untrained baseline).
        seed: torch seed set just before the model is built (makes ``random_init`` repeatable).
        num_classes: 0 = pooled features; else a new classifier of that many classes (fine-tuning).
        kwargs: further ``timm.create_model`` arguments (``drop_path_rate``, ``global_pool``).

    Raises:
        EvaluationError: the name is not a model (with the closest names).
    """
    _check_name(name)
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=not random_init, num_classes=num_classes, **kwargs)
    logger.info(
        "model %s (%s, %s weights)", name, type(model).__name__, "random" if random_init else "its"
    )
    return model.eval()


def source_architecture(name: str) -> tuple[str, dict[str, Any]]:
    """The architecture and the ``timm.create_model`` kwargs that ``name`` stands for.

    Args:
        name: see the module docstring (the name must already be known to be a model).

    Returns:
        The architecture (timm's, or the zoo's for a catalog name) and the model arguments
        recorded with it (a hub folder's or hub repo's ``config.json``, a catalog row's), so that
        a model exported from a fine-tuned copy is rebuilt the same way.
    """
    source, rest = parse_model_name(name)
    if source == "local-dir":
        _, arch, args = load_model_config_from_path(Path(rest).expanduser())
        return str(arch), dict(args)
    if source == "hf-hub":
        _, arch, args = load_model_config_from_hf(rest)
        return str(arch), dict(args)
    if name in catalog.CATALOG or name in catalog.architectures():
        entry = catalog.get_entry(name)
        return entry.timm_arch, dict(entry.model_args)
    return name.partition(".")[0], {}
