"""The registry of training view transforms that a recipe's ``data.views`` names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from selfsup_zoo.training.data.care_views import CareViews
from selfsup_zoo.training.data.labelled_view import LabelledCrop
from selfsup_zoo.training.data.sere_views import SereViews
from selfsup_zoo.training.data.timm_view import TimmTrainView

__all__ = ["VIEWS", "build_views"]

#: The views classes a recipe's ``data.views`` names.
ViewsClass = type[CareViews] | type[SereViews] | type[LabelledCrop] | type[TimmTrainView]
Views = CareViews | SereViews | LabelledCrop | TimmTrainView

#: The views classes a recipe's ``data.views`` names (``labelled``: linear probes, ``timm``:
#: fine-tuning).
VIEWS: dict[str, ViewsClass] = {
    "care": CareViews,
    "sere": SereViews,
    "labelled": LabelledCrop,
    "timm": TimmTrainView,
}


def build_views(name: str, view_args: Mapping[str, Any]) -> Views:
    """The views object of a recipe's ``data.views`` / ``data.view_args``.

    Args:
        name: A key of :data:`VIEWS` (``"care"`` or ``"sere"``).
        view_args: Keyword arguments of that class (a recipe's YAML values).

    Returns:
        The views object.

    Raises:
        KeyError: ``name`` is not in :data:`VIEWS`.
        ValueError: ``view_args`` do not fit the class's signature.
    """
    cls = VIEWS[name]
    try:
        return cls(**view_args)
    except TypeError as err:
        raise ValueError(f"data.view_args do not fit {cls.__name__}: {err}") from err
