"""Pretrained builds skip the random init (meta device + assign) and equal the eager path."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import selfsup_zoo.models  # noqa: F401  (registers the zoo's architectures)
from selfsup_zoo.errors import ArchitectureMismatchError


def _saved(arch: str, tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = timm.create_model(arch)
    path = tmp_path / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


@pytest.mark.parametrize("arch", ["care_resnet50", "sere_vit_small"])
def test_pretrained_outputs_equal_the_eager_load(arch: str, tmp_path: Path) -> None:
    _, path = _saved(arch, tmp_path)
    fast = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    eager = timm.create_model(arch)  # random init, then the file's tensors copied in
    eager.load_state_dict(load_file(str(path)))
    tensors = list(itertools.chain(fast.parameters(), fast.buffers()))
    assert not any(t.is_meta for t in tensors)
    assert [p.requires_grad for p in fast.parameters()] == [
        p.requires_grad for p in eager.parameters()
    ]
    assert fast.training and fast.pretrained_cfg["file"] == str(path)
    for (k, a), (_, b) in zip(fast.state_dict().items(), eager.state_dict().items(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), k
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(fast.eval()(x), eager.eval()(x))


def test_adapted_classifier_takes_the_eager_path(tmp_path: Path) -> None:
    """A different head cannot be assigned: timm's loader adapts it, the trunk is the file's."""
    model, path = _saved("care_resnet50", tmp_path)
    adapted = timm.create_model(
        "care_resnet50", pretrained=True, num_classes=7, pretrained_cfg_overlay={"file": str(path)}
    )
    assert adapted.get_classifier().out_features == 7
    assert torch.equal(adapted.conv1.weight, model.conv1.weight)
    assert not any(t.is_meta for t in adapted.parameters())


def test_a_wrong_file_is_still_refused(tmp_path: Path) -> None:
    _, path = _saved("care_resnet50", tmp_path)
    state = load_file(str(path))
    state.pop("fc.weight", None)
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    save_file(state, str(path))
    with pytest.raises(ArchitectureMismatchError):
        timm.create_model(
            "care_resnet50", pretrained=True, pretrained_cfg_overlay={"file": str(path)}
        )
