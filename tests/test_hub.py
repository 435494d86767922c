"""Weight resolution, verification and hub folders, on real files in an offline cache."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import timm
import torch
from safetensors.torch import save_file

from selfsup_zoo import catalog, hub, write_hub_folder
from selfsup_zoo.hub import (
    ArchitectureMismatchError,
    CorruptWeightsError,
    HashMismatchError,
    WeightsNotCachedError,
    WeightsNotPublishedError,
    resolve_weights,
)

R50 = "care_resnet50.in1k_ep100"
VITS = "sere_vit_small.in1k_ep100"


def _randomise_bn(model: torch.nn.Module) -> None:
    # Non-trivial running statistics, so that a lost buffer would change the outputs.
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(1 + 0.5 * torch.rand(m.running_var.shape, generator=g))


@pytest.fixture(scope="module")
def r50_folder(tmp_path_factory):
    model = timm.create_model("resnet50", num_classes=0).eval()
    _randomise_bn(model)
    folder = write_hub_folder(
        tmp_path_factory.mktemp("r50") / "hub",
        model.state_dict(),
        architecture="resnet50",
        checkpoint=R50,
        provenance={"test": "r50"},
    )
    return model, folder


@pytest.fixture(scope="module")
def vits_state():
    return timm.create_model("vit_small_patch16_224", num_classes=0).eval().state_dict()


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
    assert hub.file_sha256(folder.weights_path) == folder.sha256
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


def test_explicit_file_and_weights_dir_load_bit_exact(r50_folder, weights_dir):
    source, folder = r50_folder
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = source(x)
        from_file = timm.create_model(
            "care_resnet50",
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(folder.weights_path)),
        ).eval()
        assert torch.equal(from_file(x), expected)
        # timm's checkpoint_path= (strict load after building) reads the same file.
        by_path = timm.create_model("care_resnet50", checkpoint_path=str(folder.weights_path))
        assert torch.equal(by_path.eval()(x), expected)
        hub.install_hub_folder(folder, R50)
        assert (weights_dir / R50 / "model.safetensors").is_file()
        from_dir = timm.create_model("care_resnet50", pretrained=True).eval()
        assert torch.equal(from_dir(x), expected)
        # timm's own adaptation still applies on top (what timm's test_model_load_pretrained does).
        adapted = timm.create_model("care_resnet50", pretrained=True, in_chans=1, num_classes=5)
        assert adapted.conv1.weight.shape[1] == 1 and adapted.fc.out_features == 5
        feats = timm.create_model("care_resnet50", pretrained=True, features_only=True)
        assert len(feats(x)) == 5


def test_catalog_hash_is_checked_for_local_and_hub_copies(r50_folder, weights_dir, hf_cache):
    _, folder = r50_folder
    entry = catalog.CATALOG[R50]
    hub.install_hub_folder(folder, R50)
    good = dataclasses.replace(entry, sha256=folder.sha256)
    assert resolve_weights(good).sha256 == folder.sha256
    with pytest.raises(HashMismatchError, match="delete it and download it again"):
        resolve_weights(dataclasses.replace(entry, sha256="0" * 64))

    shutil.rmtree(weights_dir / R50)
    # Once published, the catalog's own Hub repo is used (here: a hand-built offline cache).
    hf_cache(
        entry.hub_repo,
        {"model.safetensors": folder.weights_path, "config.json": folder.config_path},
    )
    published = dataclasses.replace(good, published=True)
    resolved = resolve_weights(published)
    assert resolved.source == "hf-hub" and resolved.sha256 == folder.sha256
    with pytest.raises(HashMismatchError, match=entry.hub_repo.split("/")[1]):
        resolve_weights(dataclasses.replace(published, sha256="f" * 64))


def test_unpublished_catalog_repo_is_served_from_a_prefilled_cache_only(
    r50_folder, weights_dir, hf_cache
):
    """An unpublished checkpoint never asks the network, but a cache filled by hand still serves."""
    source, folder = r50_folder
    entry = catalog.CATALOG[R50]
    assert not entry.published
    with pytest.raises(WeightsNotPublishedError):
        timm.create_model("care_resnet50", pretrained=True)
    hf_cache(
        entry.hub_repo,
        {"model.safetensors": folder.weights_path, "config.json": folder.config_path},
    )
    assert resolve_weights(entry).source == "hf-cache"
    model = timm.create_model("care_resnet50", pretrained=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


def test_offline_cache_miss_is_explained(weights_dir):
    entry = dataclasses.replace(catalog.CATALOG["care_resnet101.in1k_ep800"], published=True)
    with pytest.raises(WeightsNotCachedError, match="HF_HUB_OFFLINE is set") as err:
        resolve_weights(entry)
    assert "care_resnet101.in1k_ep800/model.safetensors" in str(err.value)
    with pytest.raises(WeightsNotCachedError, match="test-org/missing"):
        timm.create_model(
            "care_resnet50",
            pretrained=True,
            pretrained_cfg_overlay=dict(hf_hub_id="test-org/missing"),
        )


def test_user_named_hub_repo_loads_from_the_offline_cache(r50_folder, hf_cache):
    source, folder = r50_folder
    hf_cache("test-org/care_resnet50-mirror", {"model.safetensors": folder.weights_path})
    model = timm.create_model(
        "care_resnet50",
        pretrained=True,
        pretrained_cfg_overlay=dict(hf_hub_id="test-org/care_resnet50-mirror"),
    )
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), source(x))


def test_truncated_and_corrupt_files_are_named(r50_folder, tmp_path):
    _, folder = r50_folder
    data = folder.weights_path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CorruptWeightsError, match="truncated") as err:
        timm.create_model(
            "care_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(truncated))
        )
    assert str(truncated) in str(err.value) and "delete it" in str(err.value)

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(data[:8] + b"#garbage#" + data[17:])
    with pytest.raises(CorruptWeightsError, match="not valid JSON"):
        timm.create_model(
            "care_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(corrupt))
        )

    pickled = tmp_path / "model.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, pickled)
    with pytest.raises(CorruptWeightsError, match="only reads '.safetensors'"):
        timm.create_model(
            "care_resnet50", pretrained=True, pretrained_cfg_overlay=dict(file=str(pickled))
        )
    renamed = tmp_path / "pickle.safetensors"
    shutil.copyfile(pickled, renamed)
    with pytest.raises(CorruptWeightsError, match="PyTorch pickle checkpoint"):
        hub.read_safetensors_header(renamed)


def test_weights_of_another_architecture_name_the_keys(tmp_path, vits_state):
    # ViT-B-shaped weights (zeros in bf16 keep the file small) loaded as SERE ViT-S.
    vitb = {
        k: torch.zeros(s, dtype=torch.bfloat16)
        for k, s in hub.expected_shapes("vit_base_patch16_224").items()
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
