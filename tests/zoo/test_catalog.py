"""The catalog holds every checkpoint both papers report, with the facts each row needs."""

import pytest

from selfsup_zoo import catalog


def test_catalog_has_every_reported_checkpoint():
    care = [e for e in catalog.CATALOG.values() if e.method == "care" and e.num_classes == 0]
    assert len(care) == 16
    assert {(e.timm_arch, e.epochs) for e in care} == {
        (a, ep)
        for a in ("resnet50", "wide_resnet50_2", "resnet101", "resnet152")
        for ep in (100, 200, 400, 800)
    }
    assert "care_resnet50.in1k_ep100_lincls" in catalog.CATALOG
    assert catalog.CATALOG["care_resnet50.in1k_ep100_lincls"].num_classes == 1000
    sere = {e.name: e.timm_arch for e in catalog.CATALOG.values() if e.method == "sere"}
    assert sere == {
        "sere_vit_small.in1k_ep100": "vit_small_patch16_224",
        "sere_vit_base.in1k_ep100": "vit_base_patch16_224",
    }


def test_reported_numbers_match_the_papers_readmes():
    top1 = {e.name: {r.metric: r.value for r in e.results} for e in catalog.CATALOG.values()}
    assert top1["care_resnet50.in1k_ep100"] == {"top1": 72.02, "top5": 90.02}
    assert top1["care_wide_resnet50_2.in1k_ep800"] == {"top1": 77.04, "top5": 93.22}
    assert top1["care_resnet101.in1k_ep200"] == {"top1": 75.89, "top5": 92.70}
    assert top1["care_resnet152.in1k_ep400"] == {"top1": 77.40, "top5": 93.63}
    assert top1["sere_vit_small.in1k_ep100"]["top1"] == 81.5
    assert top1["sere_vit_base.in1k_ep100"]["top1"] == 83.7


def test_provenance_and_licences():
    released = {n for n, e in catalog.CATALOG.items() if e.upstream == catalog.OFFICIAL}
    assert released == {
        "care_resnet50.in1k_ep100",
        "care_resnet50.in1k_ep100_lincls",
        "sere_vit_small.in1k_ep100",
        "sere_vit_base.in1k_ep100",
    }
    for entry in catalog.CATALOG.values():
        assert entry.license == ("mit" if entry.method == "care" else "cc-by-nc-sa-4.0")
        assert entry.hub_repo == f"{catalog.HF_ORG}/{entry.name}"
        # Nothing is on the Hub yet: no hash may be claimed for unpublished weights.
        assert entry.published is (entry.sha256 is not None)
        assert entry.recipe == entry.name or (entry.recipe is None and entry.regenerate_note)
    assert "CC BY-NC 4.0" in catalog.SERE_LICENSE_NOTE and "BY-NC-SA" in catalog.SERE_LICENSE_NOTE


def test_default_tag_is_the_first_row_and_unknown_names_suggest():
    assert catalog.get_entry("care_resnet50").name == "care_resnet50.in1k_ep100"
    assert catalog.get_entry("sere_vit_base").name == "sere_vit_base.in1k_ep100"
    with pytest.raises(catalog.UnknownNameError, match="Did you mean 'care_resnet50.in1k_ep100'"):
        catalog.get_entry("care_resnet5.in1k_ep100")


def test_pretrained_cfgs_follow_the_evaluation_transforms():
    care = catalog.CATALOG["care_resnet50.in1k_ep100"].pretrained_cfg()
    assert care["interpolation"] == "bilinear" and care["crop_pct"] == 0.875
    assert care["num_classes"] == 0 and care["license"] == "mit"
    sere = catalog.CATALOG["sere_vit_small.in1k_ep100"].pretrained_cfg()
    assert sere["mean"] == catalog.IMAGENET_MEAN and sere["interpolation"] == "bicubic"
    assert sere["hf_hub_filename"] == "model.safetensors"
