"""The registry of pre-training views that a recipe's ``data.views`` names."""

from __future__ import annotations

import pytest

from selfsup_zoo.training.data.care_views import CareViews
from selfsup_zoo.training.data.sere_views import SereViews
from selfsup_zoo.training.data.views import VIEWS, build_views


def test_build_views_makes_the_named_class_from_the_recipe_args() -> None:
    assert VIEWS == {"care": CareViews, "sere": SereViews}
    care = build_views("care", {"size": 32, "blur_p": 0.5})
    assert isinstance(care, CareViews) and care.output_size == 32
    assert [v.blur_p for v in care.views] == [0.5, 0.5]
    sere = build_views("sere", {"global_size": 32, "patch_size": 8, "local_crops": 2})
    assert isinstance(sere, SereViews) and sere.output_size == 32 and sere.grid == 4


def test_build_views_rejects_unknown_names_and_arguments() -> None:
    with pytest.raises(KeyError):
        build_views("simclr", {})
    with pytest.raises(ValueError, match="do not fit CareViews.*local_crops"):
        build_views("care", {"local_crops": 2})
