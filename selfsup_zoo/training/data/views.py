"""The registry of training view transforms that a recipe's ``data.views`` names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from selfsup_zoo.training.data.care_views import CareViews
from selfsup_zoo.training.data.labelled_view import LabelledCrop
from selfsup_zoo.training.data.sere_views import SereViews
from selfsup_zoo.training.data.timm_view import TimmTrainView

__all__ = ["EVAL_VIEWS", "VIEWS", "Views", "build_views"]

#: The views classes a recipe's ``data.views`` names.
Views = CareViews | SereViews | LabelledCrop | TimmTrainView

#: The pre-training views classes a recipe's ``data.views`` names.
VIEWS: dict[str, type[CareViews] | type[SereViews]] = {"care": CareViews, "sere": SereViews}

#: The views of the evaluation jobs run on the engine (``labelled``: linear probes, ``timm``:
#: fine-tuning), also named by ``data.views``.
EVAL_VIEWS: dict[str, type[LabelledCrop] | type[TimmTrainView]] = {
    "labelled": LabelledCrop,
    "timm": TimmTrainView,
}


def build_views(name: str, view_args: Mapping[str, Any]) -> Views:
    """The views object of a recipe's ``data.views`` / ``data.view_args``.

    Args:
        name: A key of :data:`VIEWS` (``"care"``, ``"sere"``) or :data:`EVAL_VIEWS`.
        view_args: Keyword arguments of that class (a recipe's YAML values).

    Returns:
        The views object.

    Raises:
        KeyError: ``name`` is not in :data:`VIEWS`.
        ValueError: ``view_args`` do not fit the class's signature.
    """
    cls = VIEWS[name] if name in VIEWS else EVAL_VIEWS[name]
    try:
        return cls(**view_args)
    except TypeError as err:
        raise ValueError(f"data.view_args do not fit {cls.__name__}: {err}") from err
