"""The zoo's architectures are ordinary timm models: registration, cfgs and the timm API surface."""

from __future__ import annotations

import pytest
import timm
import torch

import selfsup_zoo
from selfsup_zoo import catalog
from selfsup_zoo.errors import WeightsNotPublishedError
from selfsup_zoo.shapes import expected_shapes

ARCHS = catalog.architectures()
CNN_ARCHS = [a for a in ARCHS if a.startswith("care_")]
VIT_ARCHS = [a for a in ARCHS if a.startswith("sere_")]


def test_every_catalog_architecture_and_tag_is_registered():
    assert ARCHS == [
        "care_resnet50",
        "care_wide_resnet50_2",
        "care_resnet101",
        "care_resnet152",
        "sere_vit_small",
        "sere_vit_base",
    ]
    assert sorted(timm.list_models("care_*") + timm.list_models("sere_*")) == sorted(ARCHS)
    pretrained = timm.list_models("care_*", pretrained=True) + timm.list_models(
        "sere_*", pretrained=True
    )
    assert sorted(pretrained) == sorted(catalog.CATALOG)
    assert sorted(timm.list_models(module="care")) == sorted(CNN_ARCHS)
    assert sorted(timm.list_models(module="sere")) == sorted(VIT_ARCHS)


@pytest.mark.parametrize("name", list(catalog.CATALOG))
def test_pretrained_cfg_comes_from_the_catalog(name):
    entry = catalog.CATALOG[name]
    cfg = timm.get_pretrained_cfg(name)
    for key, value in entry.pretrained_cfg().items():
        assert getattr(cfg, key) == value, key
    assert cfg.tag == entry.tag and cfg.architecture == entry.arch
    # The first catalog row of an architecture is what the bare name loads.
    assert timm.get_pretrained_cfg(entry.arch).tag == catalog.default_entry(entry.arch).tag


@pytest.mark.parametrize("arch", ARCHS)
def test_builder_is_exactly_the_catalog_timm_architecture(arch):
    entry = catalog.default_entry(arch)
    with torch.device("meta"):
        ours = timm.create_model(arch, num_classes=1000)
    theirs = expected_shapes(entry.timm_arch, 1000)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == dict(theirs)
    assert type(ours).__name__ == ("ResNet" if arch.startswith("care_") else "VisionTransformer")


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_and_backward_reach_every_parameter(arch):
    # Small inputs keep this fast; ViTs have a fixed input size, so they are built for it.
    kwargs = dict(img_size=64) if arch in VIT_ARCHS else {}
    model = timm.create_model(arch, num_classes=42, **kwargs)
    out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 42) and torch.isfinite(out).all()
    out.mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []


@pytest.mark.parametrize("arch", ["care_resnet50", "sere_vit_small"])
def test_eval_forward_matches_the_timm_original_with_same_weights(arch):
    entry = catalog.default_entry(arch)
    kwargs = dict(img_size=64) if arch in VIT_ARCHS else {}
    ours = timm.create_model(arch, **kwargs).eval()
    theirs = timm.create_model(entry.timm_arch, num_classes=0, **kwargs).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def test_resnet_timm_api_surface():
    x = torch.randn(1, 3, 64, 64)
    model = timm.create_model("care_resnet50").eval()
    assert model.num_classes == 0 and model.num_features == 2048
    assert model.pretrained_cfg["pool_size"] == (7, 7)
    assert model(x).shape == (1, 2048)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (1, 2048)
    model.reset_classifier(10)
    assert model(x).shape == (1, 10) and "fc.weight" in model.state_dict()
    model.reset_classifier(0, "")
    assert model(x).ndim == 4
    assert timm.create_model("care_resnet50", num_classes=0, global_pool="")(x).shape == (
        1,
        2048,
        2,
        2,
    )
    overlaid = timm.create_model(
        "care_resnet50.in1k_ep800",
        pretrained_cfg_overlay=dict(crop_pct=1.0, input_size=(3, 160, 160)),
    )
    assert overlaid.pretrained_cfg["crop_pct"] == 1.0 and overlaid.pretrained_cfg["tag"] == (
        "in1k_ep800"
    )
    assert timm.data.resolve_data_config({}, model=overlaid)["input_size"] == (3, 160, 160)
    one = timm.create_model("care_resnet50", in_chans=1, num_classes=7)
    assert one.conv1.weight.shape[1] == 1 and one(torch.randn(1, 1, 64, 64)).shape == (1, 7)

    feats = timm.create_model("care_resnet50", features_only=True, out_indices=(1, 2, 3, 4))
    assert feats.feature_info.channels() == [256, 512, 1024, 2048]
    assert feats.feature_info.reduction() == [4, 8, 16, 32]
    assert [f.shape[1:] for f in feats(x)] == [
        (256, 16, 16),
        (512, 8, 8),
        (1024, 4, 4),
        (2048, 2, 2),
    ]

    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
    assert [t.shape[1] for t in inter] == [64, 256, 512, 1024, 2048]


def test_vit_token_model_default_cfg_and_api_surface():
    # timm's own test_model_default_cfgs_non_std only picks up names matching 'vit_*'; this is
    # its equivalent for the sere_* names.
    cfg = timm.create_model("sere_vit_small").pretrained_cfg
    assert cfg["num_classes"] == 0 and cfg["pool_size"] is None and cfg["fixed_input_size"]
    assert cfg["mean"] == catalog.IMAGENET_MEAN and cfg["crop_pct"] == 0.875
    assert cfg["input_size"] == (3, 224, 224)
    # The rest at 64 px (4x4 patches) to stay fast: shapes scale, behaviour does not change.
    model = timm.create_model("sere_vit_small", img_size=64).eval()
    assert f"{cfg['first_conv']}.weight" in model.state_dict()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.shape == (2, 17, 384)
        final, inter = model.forward_intermediates(x, indices=4)
        assert torch.equal(final, tokens) and len(inter) == 4
        assert all(t.shape == (2, 384, 4, 4) for t in inter)
        assert model.forward_head(tokens, pre_logits=True).shape == (2, model.head_hidden_size)
        assert model(x).shape == (2, model.num_features) == (2, 384)
        model.reset_classifier(10)
        assert model(x).shape == (2, 10) and f"{cfg['classifier']}.weight" in model.state_dict()
        model.reset_classifier(0)
        assert model(x).ndim == 2
        model.reset_classifier(0, "")
        assert model(x).shape == (2, 17, 384)

        feats = timm.create_model("sere_vit_small", features_only=True, img_size=64)
        assert feats.feature_info.channels() == [384] * 3
        assert feats.feature_info.reduction() == [16] * 3
        assert [f.shape for f in feats(x)] == [(2, 384, 4, 4)] * 3

    one = timm.create_model(
        "sere_vit_small", in_chans=1, num_classes=3, global_pool="avg", img_size=64
    )
    assert one(torch.randn(1, 1, 64, 64)).shape == (1, 3)


def test_unknown_names_get_suggestions():
    with pytest.raises(selfsup_zoo.UnknownNameError, match="care_resnet50"):
        selfsup_zoo.create_model("care_resnet5")
    with pytest.raises(selfsup_zoo.UnknownNameError, match="in1k_ep100"):
        selfsup_zoo.create_model("care_resnet50.in1k_ep10")
    with pytest.raises(RuntimeError, match="Invalid pretrained tag"):
        timm.create_model("care_resnet50.in1k_ep10")
    assert isinstance(selfsup_zoo.create_model("care_resnet50.in1k_ep800"), torch.nn.Module)
    with pytest.raises(FileNotFoundError, match="config.json"):
        selfsup_zoo.create_model("local-dir:/nonexistent/folder")
    assert selfsup_zoo.list_checkpoints("sere_*") == [
        "sere_vit_small.in1k_ep100",
        "sere_vit_base.in1k_ep100",
    ]


def test_unpublished_weights_say_how_to_get_them(weights_dir):
    with pytest.raises(WeightsNotPublishedError) as err:
        timm.create_model("care_resnet50", pretrained=True)
    msg = str(err.value)
    assert (
        "python -m selfsup_zoo.convert care <downloaded file> <out_dir> "
        "--checkpoint care_resnet50.in1k_ep100 --install"
    ) in msg
    assert "python -m selfsup_zoo.training.reproduce care_resnet50.in1k_ep100" in msg
    assert str(weights_dir) in msg
    with pytest.raises(WeightsNotPublishedError) as err:
        timm.create_model("care_resnet152.in1k_ep800", pretrained=True)
    assert "convert" not in str(err.value) and "reproduce care_resnet152.in1k_ep800" in str(
        err.value
    )
    with pytest.raises(WeightsNotPublishedError, match="linear classifier"):
        timm.create_model("care_resnet50.in1k_ep100_lincls", pretrained=True)
    with pytest.raises(WeightsNotPublishedError, match="convert sere"):
        timm.create_model("sere_vit_base", pretrained=True)
