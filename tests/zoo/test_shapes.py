"""Weights whose keys or shapes do not fit the architecture are refused, naming the keys."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from selfsup_zoo.errors import ArchitectureMismatchError
from selfsup_zoo.shapes import compare_keys, expected_shapes


def test_weights_of_another_architecture_name_the_keys(tmp_path, vits_state):
    # ViT-B-shaped weights (zeros in bf16 keep the file small) loaded as SERE ViT-S.
    vitb = {
        k: torch.zeros(s, dtype=torch.bfloat16)
        for k, s in expected_shapes("vit_base_patch16_224").items()
    }
    path = tmp_path / "vitb.safetensors"
    save_file(vitb, path)
    with pytest.raises(ArchitectureMismatchError) as err:
        timm.create_model(
            "sere_vit_small", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
        )
    msg = str(err.value)
    assert "pos_embed (1, 197, 768) (expected (1, 197, 384))" in msg and str(path) in msg

    finetuned = dict(
        vits_state, **{"head.weight": torch.zeros(1000, 384), "head.bias": torch.zeros(1000)}
    )
    path = tmp_path / "finetuned.safetensors"
    save_file(finetuned, path)
    with pytest.raises(ArchitectureMismatchError, match="classifier head") as err:
        timm.create_model(
            "sere_vit_small", pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
        )
    unexpected = str(err.value).split("unexpected keys: ")[1].splitlines()[0]
    assert sorted(unexpected.split(", ")) == ["head.bias", "head.weight"]


def test_compare_keys_lists_missing_unexpected_and_mismatched_in_order():
    found = {"a": torch.zeros(2), "b": torch.zeros(3), "x": torch.zeros(1)}
    expected = {"a": (2,), "b": (4,), "c": (1,)}
    assert compare_keys(found, expected) == (["c"], ["x"], ["b"])
    assert compare_keys(found, {"a": (2,), "b": (3,), "x": (1,)}) == ([], [], [])
