"""Hub folders: timm's layout, written only for weights that fit the architecture."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from selfsup_zoo import catalog, write_hub_folder
from selfsup_zoo.errors import ArchitectureMismatchError
from selfsup_zoo.weights import file_sha256

R50 = "care_resnet50.in1k_ep100"
VITS = "sere_vit_small.in1k_ep100"


def test_hub_folder_config_is_timm_layout_naming_timm_architecture(r50_folder):
    _, folder = r50_folder
    config = json.loads(folder.config_path.read_text())
    assert config["architecture"] == "resnet50" and config["num_classes"] == 0
    assert config["num_features"] == 2048 and config["global_pool"] == "avg"
    cfg = config["pretrained_cfg"]
    assert cfg["tag"] == "in1k_ep100" and cfg["license"] == "mit"
    assert cfg["mean"] == list(catalog.IMAGENET_MEAN) and cfg["interpolation"] == "bilinear"
    assert not {"hf_hub_id", "hf_hub_filename", "file", "url", "source"} & set(cfg)
    assert config["selfsup_zoo"] == {
        "checkpoint": R50,
        "method": "care",
        "sha256": folder.sha256,
        "provenance": {"test": "r50"},
    }
    assert file_sha256(folder.weights_path) == folder.sha256
    card = folder.readme_path.read_text()
    assert card.startswith("---\n") and "license: mit" in card and folder.sha256 in card
    assert sorted(p.name for p in folder.path.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]


def test_hub_folder_translates_zoo_names_and_records_model_args(tmp_path, vits_state):
    small = timm.create_model("vit_small_patch16_224", num_classes=0, img_size=32).eval()
    folder = write_hub_folder(
        tmp_path / "vit",
        small.state_dict(),
        architecture="sere_vit_small",
        model_args={"img_size": 32},
    )
    config = json.loads(folder.config_path.read_text())
    assert config["architecture"] == "vit_small_patch16_224"
    assert config["model_args"] == {"img_size": 32}
    assert config["selfsup_zoo"]["checkpoint"] is None and "tag" not in config["pretrained_cfg"]
    # timm alone rebuilds the 32 px model from config.json and loads the weights bit-exactly.
    loaded = timm.create_model(f"local-dir:{folder.path}", pretrained=True).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))


def test_hub_folder_refuses_weights_of_another_architecture(tmp_path, vits_state):
    with pytest.raises(ArchitectureMismatchError, match="pos_embed"):
        write_hub_folder(tmp_path / "bad", vits_state, architecture="vit_base_patch16_224")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="timm architecture is 'vit_small_patch16_224'"):
        write_hub_folder(tmp_path / "bad", vits_state, architecture="resnet50", checkpoint=VITS)
