"""Official-format checkpoints (built here with random weights) convert and load bit-exactly.

The files follow the layouts of the specs: CARE pre-training checkpoint ``{start_epoch, model,
optimizer}`` with student/teacher encoders, T-stream and heads; CARE linear-evaluation model;
SERE full checkpoint with ``student``/``teacher``, ``module.backbone.*``, heads and ``args``.
"""

from __future__ import annotations

import argparse
import json
import os
import re

import pytest
import timm
import torch
from helpers.subprocesses import last_json_line, run_python
from safetensors.torch import load_file, save_file

from selfsup_zoo import catalog
from selfsup_zoo.convert import convert
from selfsup_zoo.convert.__main__ import main as convert_main
from selfsup_zoo.hub import ArchitectureMismatchError, ConversionError, UnsafeCheckpointError

# Loads a hub folder through timm's own `local-dir:` and `hf-hub:` routes, with no selfsup_zoo.
_PLAIN_TIMM = r"""
import json, sys
import timm, torch
from safetensors.torch import load_file, save_file
folder, repo, inputs, out = sys.argv[1:]
x = load_file(inputs)["x"]
with torch.no_grad():
    y = {name: timm.create_model(src, pretrained=True).eval()(x)
         for name, src in (("local_dir", "local-dir:" + folder), ("hf_hub", "hf-hub:" + repo))}
save_file(y, out)
print(json.dumps({"zoo_imported": "selfsup_zoo" in sys.modules}))
"""


def _randomise_bn(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(1 + 0.5 * torch.rand(m.running_var.shape, generator=g))
            m.weight.data.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))


def _resnet50(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model("resnet50", num_classes=0).eval()
    _randomise_bn(model, seed)
    return model


def _care_heads(prefix: str, predictor: bool) -> dict[str, torch.Tensor]:
    # Names from docs/methods/care.md §1.3/§3.3; small stand-in shapes (the converter drops them
    # by name).
    out = {
        f"{prefix}trans.layer.0.attn.qkv.weight": torch.randn(12, 4),
        f"{prefix}trans.layer.0.norm1.running_mean": torch.zeros(4),
    }
    for head in ("fc1", "fc2"):
        idx = (0, 1, 3, 4, 5, 7) if predictor else (0, 1, 3)
        for i in idx:
            out[f"{prefix}{head}.{i}.weight"] = torch.randn(4)
            out[f"{prefix}{head}.{i}.bias"] = torch.randn(4)
    return out


def _care_full_checkpoint(student, teacher, epochs: int) -> dict:
    model = {}
    for net, enc in (("student", student), ("teacher", teacher)):
        prefix = f"module.{net}_encoder."
        model.update({prefix + k: v.clone() for k, v in enc.state_dict().items()})
        model.update(_care_heads(prefix, predictor=net == "student"))
    optimizer = {
        "state": {0: {"momentum_buffer": torch.zeros(3)}},
        "param_groups": [{"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-6, "params": [0]}],
    }
    return {"start_epoch": epochs, "model": model, "optimizer": optimizer}


def _inputs(tmp_path, size: int):
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "x.safetensors"
    save_file({"x": x}, path)
    return x, path


def _check_plain_timm_routes(tmp_path, hf_cache, folder, repo, x_path, expected):
    """local-dir: and hf-hub: in a child process that never imports selfsup_zoo."""
    hf_cache(
        repo,
        {"config.json": folder / "config.json", "model.safetensors": folder / "model.safetensors"},
    )
    out = tmp_path / "y.safetensors"
    proc = run_python(
        _PLAIN_TIMM, str(folder), repo, str(x_path), str(out), with_zoo=False, cwd=tmp_path
    )
    assert last_json_line(proc) == {"zoo_imported": False}
    y = load_file(out)
    assert torch.equal(y["local_dir"], expected) and torch.equal(y["hf_hub"], expected)


def test_care_pretraining_checkpoint_round_trip(tmp_path, weights_dir, hf_cache, capsys):
    student, teacher = _resnet50(0), _resnet50(1)
    src = tmp_path / "100_ckpt.pth.tar"
    torch.save(_care_full_checkpoint(student, teacher, 100), src)
    out = tmp_path / "hub"
    assert convert_main(["care", str(src), str(out), "--install"]) == 0
    printed = capsys.readouterr().out
    assert "checkpoint: care_resnet50.in1k_ep100 (inferred" in printed
    assert "exported the student encoder" in printed and "dropped training-only parts" in printed
    sha = re.search(r"sha256: ([0-9a-f]{64})", printed).group(1)
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "resnet50" and config["selfsup_zoo"]["sha256"] == sha
    assert config["selfsup_zoo"]["provenance"]["network"] == "student"

    x, x_path = _inputs(tmp_path, 64)
    with torch.no_grad():
        expected = student(x)
        assert not torch.equal(teacher(x), expected)
        # Explicit file, then the local weights directory that --install filled.
        by_file = timm.create_model(
            "care_resnet50",
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(out / "model.safetensors")),
        ).eval()
        assert torch.equal(by_file(x), expected)
        assert (weights_dir / "care_resnet50.in1k_ep100" / "model.safetensors").is_file()
        by_dir = timm.create_model("care_resnet50.in1k_ep100", pretrained=True).eval()
        assert torch.equal(by_dir(x), expected)
        # A Hub repo in the (offline, hand-built) Hugging Face cache.
        hf_cache(
            "test-org/care_resnet50.in1k_ep100", {"model.safetensors": out / "model.safetensors"}
        )
        os.remove(weights_dir / "care_resnet50.in1k_ep100" / "model.safetensors")
        by_hub = timm.create_model(
            "care_resnet50",
            pretrained=True,
            pretrained_cfg_overlay=dict(hf_hub_id="test-org/care_resnet50.in1k_ep100"),
        ).eval()
        assert torch.equal(by_hub(x), expected)
    _check_plain_timm_routes(tmp_path, hf_cache, out, "test-org/care-r50-plain", x_path, expected)

    as_teacher = convert("care", src, which="teacher")
    assert all(torch.equal(as_teacher.state_dict[k], v) for k, v in teacher.state_dict().items())


def test_care_linear_eval_model_folds_batchnorm_into_fc(tmp_path):
    encoder = _resnet50(2)
    torch.manual_seed(3)
    linear, bn = torch.nn.Linear(2048, 1000), torch.nn.BatchNorm1d(1000).eval()
    bn.running_mean.normal_(0, 0.1)
    bn.running_var.uniform_(0.5, 1.5)
    bn.weight.data.normal_(1, 0.2)
    bn.bias.data.normal_(0, 0.1)
    state = {f"module.encoder.{k}": v for k, v in encoder.state_dict().items()}
    state["module.encoder.fc.0.weight"] = torch.randn(128, 2048)  # unused official Linear
    state["module.encoder.fc.0.bias"] = torch.randn(128)
    state.update({f"module.classifier.0.{k}": v for k, v in linear.state_dict().items()})
    state.update({f"module.classifier.1.{k}": v for k, v in bn.state_dict().items()})
    src = tmp_path / "linear_eval_best_ckpt.pth.tar"
    torch.save(
        {
            "start_epoch": 80,
            "classifier": state,
            "best_top1": 72.0,
            "_best_top5": 90.0,
            "best_top1_epoch": 80,
            "optimizer": {"state": {}, "param_groups": []},
        },
        src,
    )

    assert convert_main(["care", str(src), str(tmp_path / "hub")]) == 0
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["selfsup_zoo"]["checkpoint"] == "care_resnet50.in1k_ep100_lincls"
    assert config["num_classes"] == 1000 and config["pretrained_cfg"]["tag"] == "in1k_ep100_lincls"
    model = timm.create_model(
        "care_resnet50.in1k_ep100_lincls",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "hub" / "model.safetensors")),
    ).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        official = bn(linear(encoder(x)))
        logits = model(x)
    assert logits.shape == (2, 1000)
    # Folding reorders float arithmetic: equal up to rounding, not bit-exact.
    torch.testing.assert_close(logits, official, rtol=1e-4, atol=1e-4)


def _expanded(shapes) -> dict[str, torch.Tensor]:
    # One shared storage for every tensor: a full-size layout in a few bytes on disk.
    one = torch.zeros(())
    return {k: one.expand(s) for k, s in shapes.items()}


def test_care_architecture_detection_and_mismatch(tmp_path, capsys):
    from selfsup_zoo.hub import expected_shapes

    r101 = _expanded(expected_shapes("resnet101"))
    src = tmp_path / "r101_backbone.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in r101.items()}}, src)
    result = convert("care", src)
    assert result.arch == "care_resnet101" and result.checkpoint is None
    assert result.candidates == [f"care_resnet101.in1k_ep{e}" for e in (100, 200, 400, 800)]

    assert (
        convert_main(
            ["care", str(src), str(tmp_path / "hub"), "--checkpoint", "care_resnet50.in1k_ep100"]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "does not fit care_resnet50.in1k_ep100" in err and "layer3.6.conv1.weight" in err
    assert not (tmp_path / "hub").exists()

    r50_with_fc = dict(_expanded(expected_shapes("resnet50", 1000)))
    src = tmp_path / "supervised.pth"
    torch.save(r50_with_fc, src)
    with pytest.raises(ConversionError, match="fine-tuned or supervised"):
        convert("care", src)


def _sere_full_checkpoint(teacher_vit, student_vit, epoch: int) -> dict:
    dim = teacher_vit.embed_dim
    nets = {}
    for net, vit in (("teacher", teacher_vit), ("student", student_vit)):
        sd = {f"module.backbone.{k}": v.clone() for k, v in vit.state_dict().items()}
        if net == "student":
            sd["module.backbone.masked_embed"] = torch.zeros(1, dim)
        for head in ("channel_sere", "pixel_sere", "channel_sere_local", "pixel_sere_local"):
            for part in ("projection.0", "predictor.1"):
                for buf in ("weight", "bias", "running_mean", "running_var"):
                    sd[f"module.backbone.{head}.{part}.{buf}"] = torch.randn(dim)
                sd[f"module.backbone.{head}.{part}.num_batches_tracked"] = torch.tensor(5)
            sd[f"module.backbone.{head}.predictor.0.weight"] = torch.randn(dim, dim, 1, 1)
        for i, shape in ((0, (32, dim)), (2, (32, 32)), (4, (16, 32))):  # stand-in iBOT head
            sd[f"module.head.mlp.{i}.weight"] = torch.randn(shape)
            sd[f"module.head.mlp.{i}.bias"] = torch.randn(shape[0])
        for last in ("last_layer", "last_layer2"):
            sd[f"module.head.{last}.weight_g"] = torch.ones(64, 1)
            sd[f"module.head.{last}.weight_v"] = torch.randn(64, 16)
        nets[net] = sd
    args = argparse.Namespace(
        arch="vit_small", patch_size=16, out_dim=8192, epochs=100, use_fp16=True, lr=5e-4
    )
    return dict(
        nets,
        optimizer={"state": {}, "param_groups": []},
        epoch=epoch,
        args=args,
        ibot_loss={"center": torch.zeros(1, 64)},
        fp16_scaler={"scale": 65536.0, "growth_factor": 2.0},
    )


def test_sere_full_checkpoint_round_trip(tmp_path, hf_cache, capsys):
    torch.manual_seed(4)
    teacher = timm.create_model("vit_small_patch16_224", num_classes=0).eval()
    student = timm.create_model("vit_small_patch16_224", num_classes=0).eval()
    src = tmp_path / "checkpoint.pth"
    torch.save(_sere_full_checkpoint(teacher, student, 100), src)
    out = tmp_path / "hub"
    assert convert_main(["sere", str(src), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "exported the teacher" in printed
    assert "checkpoint: sere_vit_small.in1k_ep100 (inferred" in printed
    assert "150 tensors" in printed

    x, x_path = _inputs(tmp_path, 224)
    with torch.no_grad():
        expected = teacher(x)
        model = timm.create_model(
            "sere_vit_small",
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(out / "model.safetensors")),
        ).eval()
        assert torch.equal(model(x), expected)
    _check_plain_timm_routes(tmp_path, hf_cache, out, "test-org/sere-vits-plain", x_path, expected)

    as_student = convert("sere", src, which="student")
    assert as_student.provenance["network"] == "student"
    assert all(torch.equal(as_student.state_dict[k], v) for k, v in student.state_dict().items())


def test_sere_backbone_files_report_teacher_or_student(tmp_path):
    from selfsup_zoo.hub import expected_shapes

    vits = _expanded(expected_shapes("vit_small_patch16_224"))
    src = tmp_path / "backbone.pth"
    torch.save({"model": dict(vits, masked_embed=torch.zeros(1, 384))}, src)
    result = convert("sere", src)
    assert result.checkpoint == "sere_vit_small.in1k_ep100"
    assert any("these are student weights" in n for n in result.notes)
    torch.save(vits, src)
    assert convert("sere", src).provenance["network"] == "teacher (no masked_embed)"


def test_sere_wrong_architecture_and_finetuned_files(tmp_path, capsys):
    from selfsup_zoo.hub import expected_shapes

    vitb = _expanded(expected_shapes("vit_base_patch16_224"))
    src = tmp_path / "vitb.pth"
    torch.save({"teacher": {f"module.backbone.{k}": v for k, v in vitb.items()}, "epoch": 100}, src)
    assert convert("sere", src).arch == "sere_vit_base"
    assert (
        convert_main(
            ["sere", str(src), str(tmp_path / "hub"), "--checkpoint", "sere_vit_small.in1k_ep100"]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "pos_embed (1, 197, 768) (expected (1, 197, 384))" in err
    with pytest.raises(ArchitectureMismatchError):
        convert("sere", src, checkpoint="sere_vit_small")

    finetuned = dict(_expanded(expected_shapes("vit_small_patch16_224", 1000)))
    finetuned["fc_norm.weight"] = torch.ones(384)
    torch.save({"model": finetuned}, src)
    with pytest.raises(ConversionError, match="fine-tuned ViT"):
        convert("sere", src)
    with pytest.raises(ConversionError, match="CARE checkpoint"):
        convert("sere", src, checkpoint="care_resnet50.in1k_ep100")


class _WritesAFile:
    """Unpickling this would run ``touch <marker>``: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("method", ["care", "sere"])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, capsys, method):
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pth"
    torch.save({"model": {"conv1.weight": torch.zeros(1)}, "args": _WritesAFile(marker)}, src)
    with pytest.raises(UnsafeCheckpointError, match="Refusing to load"):
        convert(method, src)
    assert convert_main([method, str(src), str(tmp_path / "hub")]) == 1
    assert "unsafe to unpickle" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "hub").exists()


def test_unknown_checkpoint_names_get_suggestions(tmp_path, capsys):
    src = tmp_path / "x.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, src)
    assert (
        convert_main(
            ["care", str(src), str(tmp_path / "hub"), "--checkpoint", "care_resnet50.in1k_ep10"]
        )
        == 1
    )
    assert "Did you mean 'care_resnet50.in1k_ep100'" in capsys.readouterr().err
    assert catalog.get_entry("care_resnet50").name == "care_resnet50.in1k_ep100"
