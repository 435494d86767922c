"""Weight resolution and verification on real files: explicit file, weights dir, offline cache."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import timm
import torch

from selfsup_zoo import catalog
from selfsup_zoo.errors import (
    CorruptWeightsError,
    HashMismatchError,
    WeightsNotCachedError,
    WeightsNotPublishedError,
)
from selfsup_zoo.hub_folder import install_hub_folder
from selfsup_zoo.weights import (
    installed_path,
    read_safetensors_header,
    resolve_weights,
    weights_dir,
)

R50 = "care_resnet50.in1k_ep100"


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
        install_hub_folder(folder, R50)
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
    install_hub_folder(folder, R50)
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
        read_safetensors_header(renamed)


def test_weights_dir_follows_the_cache_root_and_the_weights_variable_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("SELFSUP_ZOO_WEIGHTS", raising=False)
    monkeypatch.setenv("SELFSUP_ZOO_CACHE", str(tmp_path / "cache"))
    assert weights_dir() == tmp_path / "cache" / "weights"
    assert installed_path(R50) == tmp_path / "cache" / "weights" / R50 / "model.safetensors"
    monkeypatch.setenv("SELFSUP_ZOO_WEIGHTS", str(tmp_path / "elsewhere"))
    assert weights_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("SELFSUP_ZOO_CACHE")
    monkeypatch.delenv("SELFSUP_ZOO_WEIGHTS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights_dir() == tmp_path / "xdg" / "selfsup_zoo" / "weights"


@pytest.mark.parametrize("start", [b"\x80", b"PK"])
def test_a_safetensors_header_length_that_starts_like_a_pickle_is_still_safetensors(
    tmp_path, start
):
    """The first byte of a safetensors file is its header length's lowest byte: 0x80 (a pickle's
    first byte) or "PK" (a zip's) happen for 1 file in 32 or 8192 (the header is padded to 8
    bytes), and such files are still read as safetensors."""
    from safetensors.torch import load_file, save_file

    path = tmp_path / "w.safetensors"
    tensors = {"w": torch.arange(6.0).reshape(2, 3)}
    save_file(tensors, str(path), metadata={"pad": ""})
    bare = int.from_bytes(path.read_bytes()[:8], "little")
    # the smallest header length >= bare whose low byte(s) are `start`; each pad character adds
    # one byte before the padding to 8, so the pad to try lies within 8 of the difference
    modulus, low = 256 ** len(start), int.from_bytes(start, "little")
    target = bare + (low - bare) % modulus
    for pad in range(max(0, target - bare - 8), target - bare + 9):
        save_file(tensors, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[: len(start)] == start:
            break
    assert path.read_bytes()[: len(start)] == start
    assert read_safetensors_header(path)["w"]["shape"] == [2, 3]
    assert torch.equal(load_file(str(path))["w"], tensors["w"])
