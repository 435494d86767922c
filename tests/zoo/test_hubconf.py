"""hubconf.py: one torch.hub entrypoint per zoo architecture, loading through timm and the zoo."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from timm.models.resnet import ResNet
from timm.models.vision_transformer import VisionTransformer

from selfsup_zoo import cards, catalog
from selfsup_zoo.errors import UnknownNameError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hubconf():
    # Loaded from its file, as torch.hub does, under a name that cannot clash with anything.
    spec = importlib.util.spec_from_file_location("_hubconf_under_test", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _public_callables(module) -> set[str]:
    # The rule torch.hub.list applies to a hubconf module.
    return {n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")}


def _hub_load(name: str, **kwargs):
    return torch.hub.load(str(ROOT), name, source="local", **kwargs)


def _random_weights(timm_arch: str, seed: int) -> dict[str, torch.Tensor]:
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(timm_arch, num_classes=0)
    state = model.state_dict()
    # Non-trivial BN statistics, so that a load that silently kept the defaults would show.
    for key, value in state.items():
        if key.endswith("running_mean"):
            value.normal_(0, 0.1)
        elif key.endswith("running_var"):
            value.uniform_(0.5, 1.5)
    return {k: v.contiguous() for k, v in state.items()}


def test_entrypoints_are_exactly_the_catalog_architectures(hubconf):
    assert _public_callables(hubconf) == set(catalog.architectures())
    assert set(catalog.architectures()) == {
        "care_resnet50",
        "care_wide_resnet50_2",
        "care_resnet101",
        "care_resnet152",
        "sere_vit_small",
        "sere_vit_base",
    }


def test_dependencies_are_import_names_that_resolve(hubconf):
    assert hubconf.dependencies == ["torch", "timm", "huggingface_hub", "safetensors"]
    for name in hubconf.dependencies:
        assert importlib.util.find_spec(name) is not None, name


def test_docstrings_list_tags_results_and_licence(hubconf):
    for arch in catalog.architectures():
        fn = getattr(hubconf, arch)
        doc = inspect.getdoc(fn)
        assert doc and fn.__name__ == arch
        for entry in catalog.entries_for(arch):
            assert f"    {entry.tag}" in doc
            assert entry.license in doc
            assert cards.result_summary(entry) in doc
        assert f"{catalog.default_entry(arch).tag} (default)" in doc
    r50 = inspect.getdoc(hubconf.care_resnet50)
    assert "top-1 72.02, top-5 90.02 (IN-1k linear)" in r50 and "in1k_ep100_lincls" in r50
    sere = inspect.getdoc(hubconf.sere_vit_small)
    assert "CC BY-NC 4.0" in sere and "CC BY-NC-SA 4.0" in sere


def test_pretrained_is_the_default_and_tag_is_keyword_only(hubconf):
    params = inspect.signature(hubconf.sere_vit_base).parameters
    assert params["pretrained"].default is True
    assert params["tag"].kind is inspect.Parameter.KEYWORD_ONLY and params["tag"].default is None


def test_hub_load_builds_the_timm_classes_and_forwards_kwargs():
    r50 = _hub_load("care_resnet50", pretrained=False)
    assert type(r50) is ResNet and r50.num_classes == 0 and r50.num_features == 2048
    assert r50.pretrained_cfg["tag"] == "in1k_ep100"
    assert r50(torch.randn(1, 3, 64, 64)).shape == (1, 2048)
    assert _hub_load("care_resnet50", pretrained=False, num_classes=10).fc.out_features == 10
    wide = _hub_load("care_wide_resnet50_2", pretrained=False, tag="in1k_ep800")
    assert wide.layer1[0].conv1.out_channels == 128 and wide.pretrained_cfg["tag"] == "in1k_ep800"
    lincls = _hub_load("care_resnet50", pretrained=False, tag="in1k_ep100_lincls")
    assert lincls.num_classes == 1000

    vit = _hub_load("sere_vit_small", pretrained=False, num_classes=10)
    assert type(vit) is VisionTransformer and vit.embed_dim == 384 and len(vit.blocks) == 12
    assert vit.head.out_features == 10 and vit.global_pool == "token"
    assert vit.pretrained_cfg["mean"] == catalog.IMAGENET_MEAN


def test_unknown_tag_suggests_the_known_ones():
    with pytest.raises(UnknownNameError, match="Did you mean 'care_resnet50.in1k_ep800'"):
        _hub_load("care_resnet50", pretrained=False, tag="in1k_ep80")


def test_pretrained_loads_an_installed_checkpoint_from_the_local_weights_dir(tmp_path, monkeypatch):
    weights = _random_weights("vit_small_patch16_224", seed=1)
    folder = tmp_path / "sere_vit_small.in1k_ep100"
    folder.mkdir()
    save_file(weights, str(folder / catalog.WEIGHTS_FILENAME))
    monkeypatch.setenv("SELFSUP_ZOO_WEIGHTS", str(tmp_path))
    model = _hub_load("sere_vit_small")  # pretrained=True by default
    loaded = model.state_dict()
    assert set(loaded) == set(weights)
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)


_OFFLINE_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from safetensors.torch import load_file

    root, weights_file, mirror = sys.argv[1:4]
    report = {}
    model = torch.hub.load(root, "care_resnet50", source="local", pretrained=True,
                           pretrained_cfg_overlay=dict(hf_hub_id=mirror)).eval()
    expected = load_file(weights_file)
    loaded = model.state_dict()
    report["same_keys"] = set(loaded) == set(expected)
    report["equal_tensors"] = all(torch.equal(loaded[k], expected[k]) for k in expected)

    import timm  # plain timm, same hand-built cache, for the reference output
    reference = timm.create_model("hf-hub:" + mirror, pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        report["equal_outputs"] = torch.equal(model(x), reference(x))
    report["reference_class"] = type(reference).__name__

    def error_of(**kwargs):
        try:
            torch.hub.load(root, "care_resnet101", source="local", **kwargs)
        except Exception as err:
            return {"type": type(err).__name__,
                    "bases": [c.__name__ for c in type(err).__mro__], "message": str(err)}
        return None

    report["not_cached"] = error_of(
        pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id="test-mirror/care_resnet101"))
    report["not_published"] = error_of(pretrained=True)
    print(json.dumps(report))
""")


def _hand_built_cache(hf_home: Path, repo_id: str, files: dict[str, bytes]) -> None:
    # huggingface_hub's cache layout: refs/<branch> holds a commit, snapshots/<commit>/ the files.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def test_pretrained_loads_from_an_offline_hub_cache_and_misses_fail_clearly(tmp_path):
    mirror = "test-mirror/care_resnet50.in1k_ep100"
    weights = _random_weights("resnet50", seed=0)
    weights_file = tmp_path / "expected.safetensors"
    save_file(weights, str(weights_file))
    entry = catalog.CATALOG["care_resnet50.in1k_ep100"]
    config = {
        "architecture": "resnet50",
        "num_classes": 0,
        "num_features": 2048,
        "global_pool": "avg",
        "pretrained_cfg": {
            k: v
            for k, v in entry.pretrained_cfg().items()
            if k not in ("hf_hub_id", "hf_hub_filename")
        },
    }
    hf_home = tmp_path / "hf_home"
    _hand_built_cache(
        hf_home,
        mirror,
        {
            "config.json": json.dumps(config).encode(),
            "model.safetensors": weights_file.read_bytes(),
        },
    )
    env = dict(
        os.environ,
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE="1",
        SELFSUP_ZOO_WEIGHTS=str(tmp_path / "no_local_weights"),
        TORCH_HOME=str(tmp_path / "torch_home"),
    )
    env.pop("HF_HUB_CACHE", None)
    env.pop("PYTHONPATH", None)  # the checkout must come from torch.hub's sys.path insertion
    # A fresh process: huggingface_hub reads HF_HOME and HF_HUB_OFFLINE when it is imported.
    run = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT, str(ROOT), str(weights_file), mirror],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["same_keys"] and report["equal_tensors"] and report["equal_outputs"]
    assert report["reference_class"] == "ResNet"

    not_cached = report["not_cached"]
    assert not_cached["type"] == "WeightsNotCachedError" and "ZooError" in not_cached["bases"]
    assert "HF_HUB_OFFLINE is set" in not_cached["message"]
    assert "test-mirror/care_resnet101" in not_cached["message"]

    not_published = report["not_published"]
    assert not_published["type"] == "WeightsNotPublishedError"
    assert "care_resnet101.in1k_ep100" in not_published["message"]
    assert (
        "python -m selfsup_zoo.training.reproduce care_resnet101.in1k_ep100"
        in (not_published["message"])
    )
