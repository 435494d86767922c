"""Every file a user of the official CARE / SERE code holds converts, says which network it
exported, and a file of another method or architecture is refused by name.

Each file is made here the way the official code writes it (``docs/methods/care.md`` §1.3, §2.2;
``docs/methods/sere.md`` §5.5, §5.6): full training checkpoints hold real optimizer state (SERE:
numpy float64 ``lr`` / ``weight_decay`` from numpy schedules, an enabled GradScaler's state).
Backbone weights are expanded zeros (the full layout in a few bytes on disk).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup_zoo.convert import convert, load_official
from selfsup_zoo.convert.__main__ import main as convert_main
from selfsup_zoo.errors import ArchitectureMismatchError, ConversionError, UnsafeCheckpointError
from selfsup_zoo.shapes import expected_shapes
from selfsup_zoo.training.export import main as export_main

ROOT = Path(__file__).resolve().parents[2]
SERE_HEADS = ("channel_sere", "pixel_sere", "channel_sere_local", "pixel_sere_local")


def _expanded(shapes) -> dict[str, torch.Tensor]:
    one = torch.zeros(())
    return {k: one.expand(s) for k, s in shapes.items()}


def _numpy_schedule(base: float, final: float, n: int) -> np.ndarray:
    """A cosine schedule computed with numpy, as the official SERE loop does (float64 values)."""
    return final + 0.5 * (base - final) * (1 + np.cos(np.pi * np.arange(n) / n))


def _official_optimizer_state(params: list[torch.nn.Parameter]) -> tuple[dict, dict]:
    """AdamW + enabled GradScaler after two steps of the official loop: numpy lr / wd written
    into the param groups, the first group regularised."""
    groups = [{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    lr, wd = _numpy_schedule(5e-4, 1e-6, 10), _numpy_schedule(0.04, 0.4, 10)
    for it in range(2):
        for i, group in enumerate(optimizer.param_groups):
            group["lr"] = lr[it]
            if i == 0:
                group["weight_decay"] = wd[it]
        loss = sum(p.square().sum() for p in params)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    state = optimizer.state_dict()
    assert isinstance(state["param_groups"][0]["lr"], np.float64)  # what the official file holds
    return state, scaler.state_dict()


def _sere_branch(vit: dict[str, torch.Tensor], dim: int, student: bool) -> dict[str, torch.Tensor]:
    sd = {f"module.backbone.{k}": v for k, v in vit.items()}
    if student:
        sd["module.backbone.masked_embed"] = torch.zeros(1, dim)
    for head in SERE_HEADS:
        for buf in ("weight", "bias", "running_mean", "running_var"):
            sd[f"module.backbone.{head}.projection.0.{buf}"] = torch.zeros(dim)
        sd[f"module.backbone.{head}.predictor.0.weight"] = torch.zeros(()).expand(dim, dim, 1, 1)
    sd["module.head.mlp.0.weight"] = torch.randn(8, dim)
    for last in ("last_layer", "last_layer2"):
        sd[f"module.head.{last}.weight_g"] = torch.ones(16, 1)
        sd[f"module.head.{last}.weight_v"] = torch.randn(16, 8)
    return sd


def _train_sere_save_dict(epoch: int, arch: str = "vit_small_patch16_224") -> dict:
    """``{student, teacher, optimizer, epoch, args, ibot_loss, fp16_scaler}``, as train_sere
    saves it."""
    vit = _expanded(expected_shapes(arch))
    dim = vit["cls_token"].shape[-1]
    optimizer, scaler = _official_optimizer_state(
        [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(2))]
    )
    return {
        "student": _sere_branch(vit, dim, student=True),
        "teacher": _sere_branch(vit, dim, student=False),
        "optimizer": optimizer,
        "epoch": epoch,
        "args": argparse.Namespace(arch="vit_small", epochs=100, lr=5e-4, use_fp16=True),
        "ibot_loss": {"center": torch.zeros(1, 16), "center2": torch.zeros(1, 1, 16)},
        "fp16_scaler": scaler,
    }


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "selfsup_zoo.convert", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_train_sere_checkpoints_convert_with_numpy_lr_and_scaler(tmp_path) -> None:
    final, intermediate = tmp_path / "checkpoint.pth", tmp_path / "checkpoint0040.pth"
    torch.save(_train_sere_save_dict(epoch=100), final)
    torch.save(_train_sere_save_dict(epoch=41), intermediate)

    loaded = load_official(final)
    assert type(loaded["optimizer"]["param_groups"][0]["lr"]) is float  # exact float64 value
    assert loaded["optimizer"]["param_groups"][0]["lr"] == _numpy_schedule(5e-4, 1e-6, 10)[1]
    assert loaded["fp16_scaler"]["scale"] > 0 and loaded["fp16_scaler"]["_growth_tracker"] == 2

    proc = _cli("sere", str(final), str(tmp_path / "hub"))
    assert proc.returncode == 0, proc.stderr
    assert "exported network: teacher (from the pre-training checkpoint)" in proc.stdout
    assert "checkpoint: sere_vit_small.in1k_ep100 (inferred" in proc.stdout

    proc = _cli("sere", str(intermediate), str(tmp_path / "hub40"), "--which", "student")
    assert proc.returncode == 0, proc.stderr
    assert "exported network: student" in proc.stdout
    assert "checkpoint: not determined from the file" in proc.stdout  # epoch 41 of 100


def test_sere_importer_reads_a_train_sere_checkpoint(tmp_path) -> None:
    from selfsup_zoo.training.methods.sere import SereConfig, SereMethod
    from selfsup_zoo.training.methods.sere.official import (
        load_official_checkpoint,
        to_official_checkpoint,
    )

    def tiny() -> SereMethod:
        tiny_vit = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
        return SereMethod(
            SereConfig(
                model_args=tiny_vit,
                out_dim=32,
                patch_out_dim=32,
                head_hidden_dim=16,
                head_bottleneck_dim=8,
                epochs=2,
                warmup_teacher_temp_epochs=1,
                drop_path=0.0,
            )
        )

    torch.manual_seed(0)
    source = tiny()
    params = [p for p in source.student.parameters() if p.requires_grad]
    optimizer, scaler = _official_optimizer_state(params)  # steps the student: saved after it
    saved = to_official_checkpoint(source)
    saved["optimizer"], saved["fp16_scaler"] = optimizer, scaler
    saved["epoch"] = 2
    path = tmp_path / "checkpoint.pth"
    torch.save(saved, path)
    torch.manual_seed(1)
    target = tiny()
    load_official_checkpoint(target, path)
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_float64_scalars_pickled_under_numpy_1_load(tmp_path) -> None:
    """numpy 1.x names the scalar reconstructor ``numpy.core.multiarray.scalar`` (2.x: ``_core``).
    The legacy torch format keeps the pickle's text GLOBAL as is, so the name can be rewritten."""
    import io

    buf = io.BytesIO()
    torch.save(
        {"optimizer": {"param_groups": [{"lr": np.float64(0.25)}]}},
        buf,
        _use_new_zipfile_serialization=False,
    )
    raw = buf.getvalue()
    new, old = b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"
    assert raw.count(new) == 1
    src = tmp_path / "numpy1.pth"
    src.write_bytes(raw.replace(new, old))
    assert load_official(src) == {"optimizer": {"param_groups": [{"lr": 0.25}]}}


@pytest.mark.parametrize(
    ("value", "why"),
    [(np.float32(0.5), "float32"), (np.int64(3), "int64"), (np.dtype("f8"), "numpy.dtype")],
)
def test_numpy_objects_other_than_float64_scalars_are_refused(tmp_path, value, why) -> None:
    # numpy 2 pickles every dtype through numpy.dtype: only the float64 stand-in answers.
    src = tmp_path / "odd.pth"
    torch.save({"teacher": {}, "optimizer": {"param_groups": [{"lr": value}]}}, src)
    with pytest.raises(UnsafeCheckpointError, match="Refusing to load"):
        load_official(src)


def _care_file(start_epoch: int, arch: str = "resnet50") -> dict:
    """``{start_epoch, model, optimizer}`` as the official pre-training loop saves it."""
    encoder = _expanded(expected_shapes(arch))
    model = {}
    for net in ("student", "teacher"):
        model.update({f"module.{net}_encoder.{k}": v for k, v in encoder.items()})
        model[f"module.{net}_encoder.trans.layer.0.attn.qkv.weight"] = torch.zeros(6, 2)
        model[f"module.{net}_encoder.fc1.0.weight"] = torch.zeros(4, 2)
    param = torch.nn.Parameter(torch.randn(3))
    sgd = torch.optim.SGD([param], lr=0.05, momentum=0.9, weight_decay=1e-4)
    param.sum().backward()
    sgd.step()
    return {"start_epoch": start_epoch, "model": model, "optimizer": sgd.state_dict()}


def test_care_epoch_checkpoints_and_linear_model(tmp_path, capsys) -> None:
    for name, epoch, expected in (
        ("last_epoch_ckpt.pth.tar", 100, "checkpoint: care_resnet50.in1k_ep100 (inferred"),
        ("10_ckpt.pth.tar", 10, "checkpoint: not determined from the file"),
    ):
        torch.save(_care_file(epoch), tmp_path / name)
        assert convert_main(["care", str(tmp_path / name), str(tmp_path / name[:-8])]) == 0
        printed = capsys.readouterr().out
        assert "exported network: student (from the pre-training checkpoint)" in printed
        assert expected in printed

    classifier = {
        f"module.encoder.{k}": v for k, v in _expanded(expected_shapes("resnet50")).items()
    }
    classifier["module.encoder.fc.0.weight"] = torch.zeros(128, 2048)
    classifier["module.classifier.0.weight"] = torch.zeros(()).expand(1000, 2048)
    classifier["module.classifier.0.bias"] = torch.zeros(1000)
    bn = torch.nn.BatchNorm1d(1000).state_dict()
    classifier.update({f"module.classifier.1.{k}": v for k, v in bn.items()})
    for name in ("linear_eval_ckpt.pth.tar", "linear_eval_best_ckpt.pth.tar"):
        linear = {"start_epoch": 100, "classifier": classifier, "best_top1": torch.tensor(72.5)}
        linear.update(_best_top5=torch.tensor(90.0), best_top1_epoch=90, optimizer={})
        torch.save(linear, tmp_path / name)
        assert convert_main(["care", str(tmp_path / name), str(tmp_path / "lin")]) == 0
        printed = capsys.readouterr().out
        assert "exported network: student (from the linear-evaluation model)" in printed
        assert "checkpoint: care_resnet50.in1k_ep100_lincls" in printed


CONTAINERS = ("flat", "model", "state_dict")
PREFIXES = ("", "module.", "backbone.", "module.backbone.")


def test_released_sere_backbones_in_every_layout(tmp_path) -> None:
    vits = _expanded(expected_shapes("vit_small_patch16_224"))
    src = tmp_path / "backbone.pth"
    for container in CONTAINERS:
        for prefix in PREFIXES:
            for student in (False, True):
                state = dict(vits, masked_embed=torch.zeros(1, 384)) if student else dict(vits)
                state = {prefix + k: v for k, v in state.items()}
                torch.save(state if container == "flat" else {container: state}, src)
                result = convert("sere", src)
                case = f"{container} {prefix!r} student={student}"
                assert result.checkpoint == "sere_vit_small.in1k_ep100", case
                assert sorted(result.state_dict) == sorted(vits), case
                network = result.provenance["network"]
                assert network == ("student" if student else "teacher (no masked_embed)"), case


def test_lusseg_copies_of_the_vit_s_weights(tmp_path, capsys) -> None:
    vits = _expanded(expected_shapes("vit_small_patch16_224"))
    pretrained = tmp_path / "sere_pretrained_vit_small_ep100.pth"
    torch.save({"model": vits}, pretrained)
    assert convert_main(["sere", str(pretrained), str(tmp_path / "hub")]) == 0
    printed = capsys.readouterr().out
    assert "exported network: teacher (no masked_embed)" in printed
    assert "checkpoint: sere_vit_small.in1k_ep100 (inferred" in printed

    finetuned = tmp_path / "sere_finetuned_vit_small_ep100.pth"
    torch.save({"model": _expanded(expected_shapes("vit_small_patch16_224", 1000))}, finetuned)
    assert convert_main(["sere", str(finetuned), str(tmp_path / "ft")]) == 1
    assert "fine-tuned ViT" in capsys.readouterr().err


def test_files_of_another_method_or_architecture_are_refused_by_name(tmp_path, capsys) -> None:
    care, sere = tmp_path / "last_epoch_ckpt.pth.tar", tmp_path / "checkpoint.pth"
    torch.save(_care_file(100), care)
    torch.save(_train_sere_save_dict(epoch=100), sere)
    with pytest.raises(ConversionError, match=r"is a CARE checkpoint .*convert care"):
        convert("sere", care)
    with pytest.raises(ConversionError, match=r"is a SERE checkpoint .*convert sere"):
        convert("care", sere)
    assert convert_main(["sere", str(care), str(tmp_path / "hub")]) == 1
    assert "is a CARE checkpoint (ResNet weights)" in capsys.readouterr().err
    assert not (tmp_path / "hub").exists()

    vitb = tmp_path / "vitb_backbone.pth"
    torch.save(_expanded(expected_shapes("vit_base_patch16_224")), vitb)
    with pytest.raises(ArchitectureMismatchError, match="The file is a sere_vit_base"):
        convert("sere", vitb, checkpoint="sere_vit_small.in1k_ep100")
    r101 = tmp_path / "r101.pth.tar"
    torch.save(_care_file(100, "resnet101"), r101)
    with pytest.raises(ArchitectureMismatchError, match="care_resnet101.in1k_ep100"):
        convert("care", r101, checkpoint="care_resnet50.in1k_ep100")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("true",))


def test_export_refuses_a_foreign_pickle_like_the_converters(tmp_path, capsys) -> None:
    src = tmp_path / "step_000000100.pt"
    torch.save({"format": "x", "method": _RunsCode()}, src)
    assert export_main([str(src), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "Refusing to load" in err and "unsafe to unpickle" in err
    assert "Check the documentation of torch.load" not in err and "weights_only" not in err
    assert not (tmp_path / "out").exists()
