"""Tests of the CARE method: golden parity with the official code (docs/methods/care.md §10) and
hand-checked pieces.

The golden figures below were produced by the official implementation (docs/methods/care.md §10).
Parameters are filled by a deterministic rule keyed on the *official* parameter names, so the
comparison also exercises our name mapping.

Tolerances. The recorded figures are float32 results of one machine (Intel, AVX-512). The golden
case is ill-conditioned: with these random weights the float32 rounding of the convolutions grows
through the batch-normalised layers (batch statistics over 2 or 4 images), so that single pooled
layer4 features carry 3e-5 (224 px) to 6e-4 (64 px) relative noise although their sum agrees to
2e-7, and the heads (BatchNorm1d over the batch) amplify it further. Measured against float64 with
the same weights, float32 losses agree only to 1.5e-4 (con) and 2e-3 (con2, fea) at batch 2, the
T-stream vectors to 7e-3 absolute, and the gradient norm, dominated by the encoder's batch norms,
is off by 45 % at batch 2 (8 % at 64 px) in every float32 run. Which float32 value comes out depends
on the kernels: another instruction set picks other oneDNN convolution kernels (blocking,
accumulation order) and other vectorised ATen kernels (batch-norm statistics, reductions); limiting
oneDNN to AVX (``ONEDNN_MAX_CPU_ISA``), or ATen to its ``default`` capability
(``ATEN_CPU_CAPABILITY``), moves the results here by as much as going from AVX-512 to AVX2 does,
while the fused vs explicit attention (``"sdpa"`` / ``"einsum"``) and the thread count matter much
less. The 1e-5 agreement seen on the recording machine only meant identical kernels.

So every quantity has a float32 noise bound (``NOISE_*``, relative for scalars, absolute for vector
elements), about 3x the largest |float32 - float64| measured with the same weights over the
recorded figures and float32 orderings (default; oneDNN limited to AVX; ATen ``default`` kernels;
mkldnn off; one thread). float64 runs of our implementation do not depend on the instruction set
(to ~1e-7: the heads' outputs are normalised in float32). Where a test can afford one (64 px; the
slow batch-4 test) it asserts that the recorded figure *and* our float32 value both lie within the
noise bound of our float64 value; at batch 2, 224 px (two float32 runs already take most of the
time budget) our float32 value must lie within twice the bound of the recorded one. Gradients:
only the C-stream head's gradient is checked against float64 (64 px); the total norms are compared
float32 to float32 (ours vs recorded) as a magnitude check, at batch 2 not at all.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import subprocess
import sys
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from selfsup_zoo.convert import care as care_layout
from selfsup_zoo.convert.care import (
    STUDENT_PREFIX,
    TEACHER_PREFIX,
    from_official_key,
    official_key,
    to_official_state_dict,
)
from selfsup_zoo.training.losses.byol import byol_per_sample
from selfsup_zoo.training.methods import care as care_method
from selfsup_zoo.training.methods.base import StepInfo
from selfsup_zoo.training.methods.care import (
    CareConfig,
    CareMethod,
    TStreamAttention,
    load_official_checkpoint,
)

# m(k) = 1 - (1 - m_base)(cos(pi k / K) + 1) / 2, m_base 0.5, K 4, k 1 (docs/methods/care.md §10)
GOLDEN_MOMENTUM = 1.0 - 0.5 * (math.cos(math.pi / 4) + 1.0) / 2.0

GOLDEN: dict[tuple[int, int], dict[str, Any]] = {
    (2, 224): {
        "con_loss": 3.9973369,
        "con2_loss": 3.9135051,
        "fea_loss": 3.0544610,
        "loss": 10.9653034,
        "mse": {"q1": 0.00764569, "q2": 0.00728116, "k1": 0.00755526, "k2": 0.00806249},
        "loss_without_ema": 10.8925133,
        "q1": [-0.0371593, 0.0294820, 0.0417047, -0.0100558],
        "k1": [0.0018264, 0.0728454, -0.0100532, 0.0443964],
        "att_q1": [-0.0170283, 0.0249057, -0.0418103, 0.0309345],
        "att_k1": [-0.0469487, 0.0415999, 0.0125234, -0.0312611],
        "tmap_shape": (2, 2048, 7, 7),
        "tmap_sum": 296285.44,
        "pooled_sum": 4261.9409,
        "grad_norm": 662726.999,
        "grad_groups": {"encoder": 662467.11, "trans": 18545.26, "fc1": 259.983, "fc2": 636.643},
        "delta_norm": 66272.70,
        "per_sample": {
            "c1": [1.946660, 2.064354],
            "c2": [2.047577, 1.936083],
            "t1": [1.823804, 2.061286],
            "t2": [1.913424, 2.028496],
        },
    },
    (4, 224): {
        "con_loss": 4.0555019,
        "con2_loss": 4.0264468,
        "fea_loss": 3.1382523,
        "loss": 11.2202015,
        "mse": {"q1": 0.00755820, "q2": 0.00785145, "k1": 0.00805223, "k2": 0.00792064},
        "loss_without_ema": 11.1746931,
        "q1": [0.0101565, 0.0676819, -0.0024023, -0.0029925],
        "k1": [0.0507824, 0.1517388, -0.0456602, 0.0917274],
        "att_q1": [-0.0101397, -0.0120345, -0.0688732, 0.0459969],
        "att_k1": [-0.0330653, 0.0857735, 0.0330509, -0.0402594],
        "tmap_shape": (4, 2048, 7, 7),
        "tmap_sum": 599512.06,
        "pooled_sum": 8515.6240,
        "grad_norm": 6516.20848,
        "grad_groups": {
            "encoder": 6513.3340,
            "trans": 192.43810,
            "fc1": 15.721991,
            "fc2": 13.168011,
        },
        "delta_norm": 651.62086,
        "per_sample": {
            "c1": [1.835373, 2.256113, 1.990978, 1.864547],
            "c2": [2.124038, 2.099620, 1.963590, 2.087748],
            "t1": [2.028342, 2.022028, 2.124642, 2.165382],
            "t2": [2.044042, 1.932156, 1.854986, 1.934210],
        },
    },
    # non-official small variant: 64 px, T-stream fmap 4
    (4, 64): {
        "con_loss": 3.9624838,
        "con2_loss": 3.9974296,
        "fea_loss": 3.1722422,
        "loss": 11.1321554,
        "grad_norm": 9371.371,
    },
}
TEACHER_SUMS = {
    "conv1.weight": -5.7179441,
    "trans.net.0.net.3.pos_emb.height": 23.5495153,
    "fc1.0.weight": -33.8964530,
    "fc2.3.bias": 1.3222012,
}
LOSS_KEYS = ("con_loss", "con2_loss", "fea_loss", "loss")


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# --------------------------------------------------------------------------------------------------
# golden parity (docs/methods/care.md §10)
# --------------------------------------------------------------------------------------------------


def _golden_value(key: str, shape: tuple[int, ...]) -> np.ndarray:
    """The docs/methods/care.md §10 fill rule; ``key`` is the official key with ``module.`` and the
    encoder name replaced by ``""`` (student) or ``"teacher/"`` (teacher)."""
    u = np.random.RandomState(zlib.crc32(key.encode("utf-8"))).uniform(-1.0, 1.0, size=shape)
    if len(shape) == 1 and key.endswith(".weight"):
        return 1.0 + 0.1 * u
    if len(shape) == 1 and key.endswith(".bias"):
        return 0.1 * u
    if key.endswith(("pos_emb.height", "pos_emb.width")):
        return u
    fan_in = u.size / shape[0]
    return u * math.sqrt(3.0 / fan_in)


@torch.no_grad()
def fill_golden(method: CareMethod) -> None:
    for name, p in method.named_parameters():
        key = official_key(name)
        if key.startswith(STUDENT_PREFIX):
            seed_key = key[len(STUDENT_PREFIX) :]
        else:
            seed_key = "teacher/" + key[len(TEACHER_PREFIX) :]
        p.copy_(torch.from_numpy(_golden_value(seed_key, tuple(p.shape))).float())
    for name, b in method.named_buffers():
        if name.endswith("running_var"):
            b.fill_(1.0)
        else:  # running_mean, num_batches_tracked
            b.zero_()


def _inputs(batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x1 = np.random.RandomState(11).standard_normal((batch, 3, size, size))
    x2 = np.random.RandomState(12).standard_normal((batch, 3, size, size))
    return torch.from_numpy(x1).float(), torch.from_numpy(x2).float()


def _grad_stats(method: CareMethod) -> dict[str, Any]:
    groups: dict[str, float] = {}
    missing = []
    for name, p in method.student.named_parameters():
        if p.grad is None:
            missing.append(name)
            continue
        group = "encoder" if name.startswith("backbone.") else name.split(".")[0]
        groups[group] = groups.get(group, 0.0) + p.grad.double().pow(2).sum().item()
    return {
        "grad_missing": missing,
        "grad_norm": math.sqrt(sum(groups.values())),
        "grad_groups": {k: math.sqrt(v) for k, v in groups.items()},
    }


def _record(
    method: CareMethod, x1: torch.Tensor, x2: torch.Tensor, backward: bool
) -> dict[str, Any]:
    method.zero_grad(set_to_none=True)
    out = method.compute(x1, x2)
    rec: dict[str, Any] = {k: out.terms[k].item() for k in LOSS_KEYS}
    rec["mse"] = {k: v.item() for k, v in out.mse.items()}
    rec["q1"] = out.s1.proj[0, :4].tolist()
    rec["k1"] = out.t1.proj[0, :4].tolist()
    rec["att_q1"] = out.s1.att_proj[0, :4].tolist()
    rec["att_k1"] = out.t1.att_proj[0, :4].tolist()
    rec["tmap_shape"] = tuple(out.s1.tmap.shape)
    rec["tmap_sum"] = out.s1.tmap.double().sum().item()
    rec["pooled_sum"] = out.s1.pooled.double().sum().item()
    rec["per_sample"] = {
        "c1": byol_per_sample(out.s1.proj, out.t1.proj).tolist(),
        "c2": byol_per_sample(out.s2.proj, out.t2.proj).tolist(),
        "t1": byol_per_sample(out.s1.att_proj, out.t1.att_proj).tolist(),
        "t2": byol_per_sample(out.s2.att_proj, out.t2.att_proj).tolist(),
    }
    rec["logged_detached"] = all(not out.terms[k].requires_grad for k in LOSS_KEYS[:3])
    if backward:
        out.terms["loss"].backward()
        rec.update(_grad_stats(method))
    else:
        out.terms["loss"].detach_()
    return rec


def run_golden(
    batch: int, size: int, sdpa_backward: bool, without_ema: bool, float64: bool = False
) -> dict[str, Any]:
    """Build, fill, EMA, then the default (sdpa) path and the official-order (einsum) path on the
    same weights; one SGD step from the einsum gradients gives the update norm. ``float64`` adds the
    float64 reference (forward and backward) under ``"float64"``."""
    method = CareMethod(CareConfig(img_size=size))
    method.train()
    fill_golden(method)
    with _flush_denormal():
        return _run_filled(method, batch, size, sdpa_backward, without_ema, float64)


@contextlib.contextmanager
def _flush_denormal() -> Iterator[None]:
    """The golden weights drive some activations/gradients into float32 denormals, which make CPU
    kernels several times slower; flushing them changes nothing measurable (values < 1.2e-38)."""
    torch.set_flush_denormal(True)  # returns False (and does nothing) where unsupported
    try:
        yield
    finally:
        torch.set_flush_denormal(False)  # the process default


def _run_filled(
    method: CareMethod,
    batch: int,
    size: int,
    sdpa_backward: bool,
    without_ema: bool,
    float64: bool,
) -> dict[str, Any]:
    x1, x2 = _inputs(batch, size)
    res: dict[str, Any] = {}
    if without_ema:
        method.set_attention("einsum")
        with torch.no_grad():
            res["loss_without_ema"] = method.compute(x1, x2).terms["loss"].item()
    method.update_teacher(GOLDEN_MOMENTUM)
    teacher = dict(method.teacher.named_parameters())
    res["teacher_sums"] = {
        k: teacher[from_official_key(TEACHER_PREFIX + k).split(".", 1)[1]].double().sum().item()
        for k in TEACHER_SUMS
    }
    res["official_keys"] = list(to_official_state_dict(method))
    res["num_student_params"] = len(method.param_groups()[0]["params"])
    res["numel"] = {
        "encoder": sum(p.numel() for p in method.student.backbone.parameters()),
        "trans": sum(p.numel() for p in method.student.trans.parameters()),
        "student_fc1": sum(p.numel() for p in method.student.fc1.parameters()),
        "teacher_fc1": sum(p.numel() for p in method.teacher.fc1.parameters()),
    }
    if float64:
        res["float64"] = _float64_reference(method, x1, x2, backward=True)
    method.set_attention("sdpa")
    res["sdpa"] = _record(method, x1, x2, backward=sdpa_backward)
    method.set_attention("einsum")
    res["einsum"] = _record(method, x1, x2, backward=True)
    before = [p.detach().clone() for p in method.param_groups()[0]["params"]]
    groups = [
        {"params": g["params"], "weight_decay": 1e-4 if g["weight_decay"] else 0.0}
        for g in method.param_groups()
    ]
    torch.optim.SGD(groups, lr=0.1, momentum=0.9).step()
    after = method.param_groups()[0]["params"]
    res["einsum"]["delta_norm"] = math.sqrt(
        sum(
            (a.detach().double() - b.double()).pow(2).sum().item()
            for a, b in zip(after, before, strict=True)
        )
    )
    return res


@pytest.fixture(scope="module")
def golden_b2() -> dict[str, Any]:
    torch.manual_seed(0)
    return run_golden(2, 224, sdpa_backward=False, without_ema=False)


# Float32 noise bounds |float32 - float64| (module docstring): relative for the scalars, absolute
# for the elements of the unit-norm 256-d vectors. The largest measured value is in the comment.
NOISE_B2 = {
    "con_loss": 5e-4,  # 1.5e-4
    "con2_loss": 5e-3,  # 1.8e-3
    "fea_loss": 7e-3,  # 2.2e-3
    "loss": 4e-3,  # 1.2e-3
    "mse": 1.5e-2,  # 4.7e-3
    "q1": 1.2e-3,  # 3.7e-4 absolute
    "k1": 1e-4,  # 3e-5 absolute
    "att_q1": 2e-2,  # 6.6e-3 absolute
    "att_k1": 2e-2,  # 5.6e-3 absolute
    "per_sample.c1": 4e-3,  # 1.3e-3 absolute (C-stream 2 - 2cos)
    "per_sample.c2": 4e-3,
    "per_sample.t1": 2.5e-2,  # 7.5e-3 absolute (T-stream)
    "per_sample.t2": 2.5e-2,
    "tmap_sum": 5e-6,  # 1.4e-6
    "pooled_sum": 1e-6,  # 1.7e-7
    # No gradient norms: at batch 2 the float32 gradient is dominated by rounding in the encoder's
    # batch norms: float64 gives 445731, float32 runs 643000-663000 (the recorded 662727).
}
NOISE_SMALL = {
    "con_loss": 5e-5,  # 1.7e-5
    "con2_loss": 5e-4,  # 1.4e-4
    "fea_loss": 1e-4,  # 3.4e-5
    "loss": 2e-4,  # 5.7e-5
    "mse": 6e-4,  # 1.9e-4
    "q1": 1e-4,  # 3.4e-5 absolute
    "k1": 7e-5,  # 2.1e-5 absolute
    "att_q1": 1e-3,  # 2.8e-4 absolute
    "att_k1": 1e-3,  # 2.8e-4 absolute
    "tmap_sum": 1.2e-5,  # 3.6e-6
    "pooled_sum": 1.2e-6,  # 3.7e-7
    # gradients: only the C-stream head's is well conditioned (float32 vs float64: 4e-4); the
    # encoder's, which dominates the norm, is not (float64 10190.5, float32 9439, recorded 9371.4)
    "grad_groups.fc1": 2e-3,
}
# float32 vs float32: our gradient norm vs the recorded one (measured 7e-3 at 64 px); a magnitude
# check, the float64 norm is 8 % higher
GRAD_NORM_SMALL = 5e-2
NOISE_B4 = {  # batch 4, 224 px (slow): far better conditioned than batch 2
    "con_loss": 5e-5,  # 1.4e-5
    "con2_loss": 2e-4,  # 6.8e-5
    "fea_loss": 5e-5,  # 1.4e-5
    "loss": 5e-5,  # 1.6e-5
    "mse": 1.2e-4,  # 3.7e-5
    "q1": 7e-5,  # 2.1e-5 absolute
    "k1": 2.5e-5,  # 7.8e-6 absolute
    "att_q1": 5e-4,  # 1.5e-4 absolute
    "att_k1": 5e-4,  # 1.4e-4 absolute
    "per_sample.c1": 2e-4,  # 6.9e-5 absolute
    "per_sample.c2": 2e-4,
    "per_sample.t1": 1.7e-3,  # 5.5e-4 absolute
    "per_sample.t2": 1.7e-3,
    "tmap_sum": 1.2e-5,  # 3.9e-6
    "pooled_sum": 5e-7,  # 1.2e-7
    # gradients: float32 runs are 0.7-0.9 % below float64 (6560.1) in the encoder and T-stream
    "grad_norm": 2.5e-2,  # 8.1e-3
    "grad_groups.encoder": 2.5e-2,  # 8.1e-3
    "grad_groups.trans": 3e-2,  # 9.1e-3
    "grad_groups.fc1": 2e-3,  # 3.3e-4
    "grad_groups.fc2": 5e-3,  # 1.6e-3
}
ABSOLUTE = ("q1", "k1", "att_q1", "att_k1", "per_sample")


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"mse": {"q1": x}, "q1": [a, b]}`` -> ``{"mse.q1": x, "q1[0]": a, "q1[1]": b}``; numbers
    only."""
    out: dict[str, float] = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, list) and all(isinstance(x, float) for x in v):
            out.update({f"{prefix}{k}[{i}]": x for i, x in enumerate(v)})
        elif isinstance(v, float):
            out[prefix + k] = v
    return out


def _check_within(
    got: dict[str, Any], want: dict[str, Any], noise: dict[str, float], factor: float, what: str
) -> None:
    """Every quantity of ``want`` that ``noise`` bounds (by its flattened name, e.g. ``"mse.q1"``,
    or its group, ``"mse"``): |got - want| <= factor * noise, relative to |want| for scalars,
    absolute for vector elements (``ABSOLUTE``)."""
    flat_got, flat_want = _flatten(got), _flatten(want)
    checked = 0
    for key, w in flat_want.items():
        name = key.split("[")[0]  # "mse.q1", "per_sample.t1", "q1", ...
        group = name if name in noise else name.split(".")[0]
        if group not in noise:
            continue
        absolute = group.split(".")[0] in ABSOLUTE
        tol = factor * noise[group] * (1.0 if absolute else abs(w))
        assert abs(flat_got[key] - w) <= tol, (what, key, flat_got[key], w, tol)
        checked += 1
    assert checked > 0, what


def _float64_reference(
    method: CareMethod, x1: torch.Tensor, x2: torch.Tensor, backward: bool
) -> dict[str, Any]:
    """Our implementation in float64 on the same weights (a copy; ``method`` is untouched)."""
    ref = copy.deepcopy(method).double()
    ref.set_attention("einsum")
    with _flush_denormal():
        return _record(ref, x1.double(), x2.double(), backward=backward)


def _check_structure(rec: dict[str, Any], exp: dict[str, Any]) -> None:
    assert rec["tmap_shape"] == exp["tmap_shape"]
    assert rec["logged_detached"]


def test_golden_b2_official_order(golden_b2: dict[str, Any]) -> None:
    rec, exp = golden_b2["einsum"], GOLDEN[(2, 224)]
    _check_structure(rec, exp)
    _check_within(rec, exp, NOISE_B2, 2.0, "einsum vs recorded")
    assert rec["grad_missing"] == []
    # the gradient norm itself is float32 noise here (NOISE_B2); the SGD step must still be
    # dtheta = -0.1 (g + 1e-4 theta) with a small decay term, as in the recorded pair (1.5e-9)
    assert math.isfinite(rec["grad_norm"])
    assert rel(rec["delta_norm"], 0.1 * rec["grad_norm"]) < 1e-6
    assert rel(exp["delta_norm"], 0.1 * exp["grad_norm"]) < 1e-6


def test_golden_b2_sdpa(golden_b2: dict[str, Any]) -> None:
    rec, exp = golden_b2["sdpa"], GOLDEN[(2, 224)]
    _check_structure(rec, exp)
    _check_within(rec, exp, NOISE_B2, 2.0, "sdpa vs recorded")
    # both paths share everything but the attention arithmetic: the C-stream agrees exactly
    assert rec["con_loss"] == golden_b2["einsum"]["con_loss"]
    assert rec["q1"] == golden_b2["einsum"]["q1"] and rec["k1"] == golden_b2["einsum"]["k1"]


def test_golden_teacher_after_ema(golden_b2: dict[str, Any]) -> None:
    for k, v in TEACHER_SUMS.items():
        assert rel(golden_b2["teacher_sums"][k], v) < 1e-6, (k, golden_b2["teacher_sums"][k], v)


def test_official_key_layout_r50(golden_b2: dict[str, Any]) -> None:
    """docs/methods/care.md §1.3: 902 entries in the official ``model`` state dict, grouped as
    listed; sizes per §3."""
    keys = golden_b2["official_keys"]
    assert len(keys) == len(set(keys)) == 902

    def count(prefix: str, head: str | None) -> int:
        rest = [k[len(prefix) :] for k in keys if k.startswith(prefix)]
        if head is None:
            return sum(not r.startswith(("trans.", "fc1.", "fc2.")) for r in rest)
        return sum(r.startswith(head) for r in rest)

    for prefix, fc in ((STUDENT_PREFIX, 18), (TEACHER_PREFIX, 9)):
        assert count(prefix, None) == 318
        assert count(prefix, "trans.") == 106
        assert count(prefix, "fc1.") == fc and count(prefix, "fc2.") == fc
    for k in (
        "module.student_encoder.trans.net.0.shortcut.1.running_var",
        "module.student_encoder.trans.net.4.net.3.pos_emb.width",
        "module.student_encoder.fc2.7.bias",
        "module.teacher_encoder.layer4.0.downsample.1.weight",
        "module.teacher_encoder.fc1.3.weight",
    ):
        assert k in keys
    assert golden_b2["num_student_params"] == 241  # the official SGD state size
    assert golden_b2["numel"] == {
        "encoder": 23_508_032,
        "trans": 32_813_568,
        "student_fc1": 11_559_424,
        "teacher_fc1": 9_449_728,
    }


def test_golden_small_variant() -> None:
    """Non-official 64-px variant (T-stream fmap 4), B = 4: better conditioned than 224 px at B = 2,
    so it carries the strict checks; recorded and float32 values against our float64 value."""
    method = CareMethod(CareConfig(img_size=64))
    assert method.student.trans.net[0].net[3].pos_emb.height.shape == (4, 128)
    assert method.student.trans.net[1].net[3].pos_emb.height.shape == (2, 128)
    fill_golden(method)
    method.update_teacher(GOLDEN_MOMENTUM)
    x1, x2 = _inputs(4, 64)
    exp = GOLDEN[(4, 64)]
    ref = _float64_reference(method, x1, x2, backward=True)
    _check_within(ref, exp, NOISE_SMALL, 1.0, "recorded vs float64")
    for impl in ("sdpa", "einsum"):
        method.set_attention(impl)
        with _flush_denormal():
            rec = _record(method, x1, x2, backward=True)
        assert rec["grad_missing"] == []
        _check_within(rec, ref, NOISE_SMALL, 1.0, f"{impl} vs float64")
        assert rel(rec["grad_norm"], exp["grad_norm"]) < GRAD_NORM_SMALL, (impl, rec["grad_norm"])


@pytest.mark.slow
def test_golden_b4_224() -> None:
    res = run_golden(4, 224, sdpa_backward=True, without_ema=True, float64=True)
    exp = GOLDEN[(4, 224)]
    # float32 vs float32 (two bounds); measured 1.2e-5 between AVX-512 and AVX2
    assert rel(res["loss_without_ema"], exp["loss_without_ema"]) < 2 * NOISE_B4["loss"]
    _check_within(res["float64"], exp, NOISE_B4, 1.0, "recorded vs float64")
    for impl in ("einsum", "sdpa"):
        rec = res[impl]
        _check_structure(rec, exp)
        assert rec["grad_missing"] == []
        _check_within(rec, res["float64"], NOISE_B4, 1.0, f"{impl} vs float64")
    assert rel(res["einsum"]["delta_norm"], 0.1 * res["einsum"]["grad_norm"]) < 1e-6
    assert rel(exp["delta_norm"], 0.1 * exp["grad_norm"]) < 1e-6


# --------------------------------------------------------------------------------------------------
# small hand-checked pieces (tiny model)
# --------------------------------------------------------------------------------------------------


def _tiny(**overrides: Any) -> CareMethod:
    torch.manual_seed(0)
    cfg = CareConfig.smoke()
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return CareMethod(cfg)


def _batch(b: int = 4, size: int = 64, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "x1": torch.randn(b, 3, size, size, generator=g),
        "x2": torch.randn(b, 3, size, size, generator=g),
    }


@torch.no_grad()
def _perturb_student(method: CareMethod, scale: float = 0.01) -> None:
    g = torch.Generator().manual_seed(123)
    for p in method.student.parameters():
        p.add_(torch.randn(p.shape, generator=g) * scale)


def test_loss_composition_and_fea_scale() -> None:
    method = _tiny()
    _perturb_student(method)
    b = _batch()
    out = method.compute(b["x1"], b["x2"])
    q1, q2, k1, k2 = out.s1.proj, out.s2.proj, out.t1.proj, out.t2.proj
    a1, a2, ak1, ak2 = out.s1.att_proj, out.s2.att_proj, out.t1.att_proj, out.t2.att_proj
    for v in (q1, a1, k1, ak1):
        torch.testing.assert_close(v.norm(dim=1), torch.ones(4))
    # con: the two view pairs are summed, each averaged over the batch (range 0..8)
    con = (2 - 2 * (q1 * k1).sum(1)).mean() + (2 - 2 * (q2 * k2).sum(1)).mean()
    con2 = (2 - 2 * (a1 * ak1).sum(1)).mean() + (2 - 2 * (a2 * ak2).sum(1)).mean()
    torch.testing.assert_close(out.terms["con_loss"], con.detach())
    torch.testing.assert_close(out.terms["con2_loss"], con2.detach())
    # each MSE term is a mean over B*D elements = mean_b(2 - 2cos) / D
    dim = method.config.out_dim
    assert dim == q1.shape[1]
    torch.testing.assert_close(out.mse["q1"], byol_per_sample(q1, a1).mean() / dim)
    torch.testing.assert_close(out.mse["k2"], byol_per_sample(k2, ak2).mean() / dim)
    fea = sum(out.mse.values())
    torch.testing.assert_close(out.terms["fea_loss"], 100.0 * fea.detach())
    torch.testing.assert_close(out.terms["loss"], con + con2 + 100.0 * fea)
    # the teacher terms are constants, the student ones carry gradient only to the C-stream side
    assert not out.mse["k1"].requires_grad and not out.mse["k2"].requires_grad
    assert out.mse["q1"].requires_grad
    method.zero_grad(set_to_none=True)
    out.mse["q1"].backward()
    assert (
        method.student.fc2[0].weight.grad is None
        and method.student.trans.net[0].net[0].weight.grad is None
    )
    assert method.student.fc1[0].weight.grad is not None


def test_weights_scale_terms() -> None:
    method = _tiny(lambda_fea=3.0, con_weight=0.5, con2_weight=2.0)
    b = _batch()
    with torch.no_grad():
        out = method.compute(b["x1"], b["x2"])
    t = out.terms
    torch.testing.assert_close(t["fea_loss"], 3.0 * sum(out.mse.values()))
    torch.testing.assert_close(
        t["loss"], 0.5 * t["con_loss"] + 2.0 * t["con2_loss"] + t["fea_loss"]
    )


def test_ema_touches_exactly_the_teacher_params() -> None:
    method = _tiny()
    b = _batch()
    with torch.no_grad():
        method.compute(b["x1"], b["x2"])  # moves BN running stats of both networks
    _perturb_student(method)
    t_before = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    s_before = {k: v.clone() for k, v in method.student.state_dict().items()}
    m = 0.25
    method.update_teacher(m)
    t_params = dict(method.teacher.named_parameters())
    student_params = {n for n, _ in method.student.named_parameters()}
    predictor = {
        n for n in student_params if n.split(".")[0] in ("fc1", "fc2") and int(n.split(".")[1]) >= 4
    }
    assert len(predictor) == 12  # Linear 4, BN 5, Linear 7 of each head
    assert set(t_params) == student_params - predictor
    assert {n for n, _, _ in method.ema_pairs()} == set(t_params)
    for name, value in method.teacher.state_dict().items():
        if name in t_params:
            expected = m * t_before[name] + (1 - m) * s_before[name]
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
            assert not torch.equal(value, t_before[name])
        else:  # BN buffers: never averaged (docs/methods/care.md §3.5)
            assert torch.equal(value, t_before[name]), name
    for name, value in method.student.state_dict().items():
        assert torch.equal(value, s_before[name]), name
    # m = 1 keeps the teacher, m = 0 copies the student
    method.update_teacher(1.0)
    method.update_teacher(0.0)
    for name, t in method.teacher.named_parameters():
        assert torch.equal(t, dict(method.student.named_parameters())[name])
    with pytest.raises(ValueError):
        method.update_teacher(1.5)


def test_tstream_rejects_wrong_map_size() -> None:
    method = _tiny()  # built for 64 px -> layer3 map 4x4
    for size in (49, 64):  # ceil(size / 16) == 4
        with torch.no_grad():
            method(_batch(2, size), StepInfo(0, 0, 1, 1))
    for size in (48, 80):
        with pytest.raises(ValueError, match=r"expects a \[N, 1024, 4, 4\] layer3 map.*img_size"):
            with torch.no_grad():
                method(_batch(2, size), StepInfo(0, 0, 1, 1))
    attn = TStreamAttention(8, 5, 2, 4)
    with pytest.raises(ValueError, match="built for a 5x5 map, got 6x6"):
        attn(torch.randn(1, 8, 6, 6))


def _official_attention(attn: TStreamAttention, x: torch.Tensor) -> torch.Tensor:
    """Independent statement of the official formula (docs/methods/care.md §3.2), written with
    explicit loops over heads: logits = (q s) k^T + (q s) P^T, softmax over keys, out = attn v,
    heads concatenated."""
    b, _, h, w = x.shape
    heads, d = attn.heads, attn.dim_head
    qkv = F.conv2d(x, attn.to_qkv.weight)
    q_all, k_all, v_all = (
        qkv[:, : heads * d],
        qkv[:, heads * d : 2 * heads * d],
        qkv[:, 2 * heads * d :],
    )
    pos = torch.stack(
        [attn.pos_emb.height[r] + attn.pos_emb.width[c] for r in range(h) for c in range(w)]
    )  # [h*w, d], token index r*w + c
    outs = []
    for i in range(heads):
        q = q_all[:, i * d : (i + 1) * d].flatten(2).transpose(1, 2) * d**-0.5  # [b, n, d]
        k = k_all[:, i * d : (i + 1) * d].flatten(2).transpose(1, 2)
        v = v_all[:, i * d : (i + 1) * d].flatten(2).transpose(1, 2)
        logits = torch.einsum("bid,bjd->bij", q, k) + torch.einsum("bid,jd->bij", q, pos)
        o = torch.einsum("bij,bjd->bid", logits.softmax(-1), v)
        outs.append(o.transpose(1, 2).reshape(b, d, h, w))
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("impl", ["sdpa", "einsum"])
def test_attention_matches_official_formula(impl: str) -> None:
    torch.manual_seed(3)
    attn = TStreamAttention(dim=24, fmap_size=5, heads=3, dim_head=16, impl=impl)
    x = torch.randn(2, 24, 5, 5, requires_grad=True)
    out = attn(x)
    ref = _official_attention(attn, x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(
        out, [x, attn.to_qkv.weight, attn.pos_emb.height, attn.pos_emb.width], g
    )
    grads_ref = torch.autograd.grad(
        ref, [x, attn.to_qkv.weight, attn.pos_emb.height, attn.pos_emb.width], g
    )
    for a, r in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)


def test_initialisation_and_structure() -> None:
    method = _tiny()
    s, t = method.student, method.teacher
    # T-stream gammas train from 1 (the official zero-init of net.8 is overwritten,
    # docs/methods/care.md §9 #4)
    for block in s.trans.net:
        assert torch.equal(block.net[8].weight, torch.ones_like(block.net[8].weight))
    # no zero-gamma on the ResNet's last BN either (zero_init_last=False, docs/methods/care.md §1.1)
    assert torch.equal(s.backbone.layer1[0].bn3.weight, torch.ones(256))
    pos = s.trans.net[0].net[3].pos_emb.height
    assert 0.5 < pos.std().item() * method.config.tstream_dim_head**0.5 < 1.5
    assert len(s.fc1) == 8 and len(s.fc2) == 8 and len(t.fc1) == 4 and len(t.fc2) == 4
    t_params = dict(t.named_parameters())
    for name, p in s.named_parameters():
        if name in t_params:
            assert torch.equal(p, t_params[name]) and p.data_ptr() != t_params[name].data_ptr()
    assert all(not p.requires_grad for p in t.parameters())
    assert all(p.requires_grad for p in s.parameters())


def test_forward_interface_and_gradients() -> None:
    # the smoke configuration spelled out field by field (T-stream at its full 2048 width)
    cfg = CareConfig(
        arch="resnet50",
        model_args={"layers": [1, 1, 1, 1]},
        img_size=64,
        tstream_layers=1,
        tstream_heads=2,
        tstream_dim_head=32,
        hidden_dim=256,
        out_dim=64,
    )
    method = CareMethod(cfg)
    terms = method(_batch(), StepInfo(step=0, epoch=0, steps_per_epoch=10, total_steps=10))
    assert set(terms) == {"loss", "con_loss", "con2_loss", "fea_loss"}
    assert terms["loss"].requires_grad and terms["loss"].dtype == torch.float32
    assert all(not terms[k].requires_grad for k in ("con_loss", "con2_loss", "fea_loss"))
    terms["loss"].backward()
    no_grad = [n for n, p in method.student.named_parameters() if p.grad is None]
    assert no_grad == []
    assert all(p.grad is None for p in method.teacher.parameters())


def test_param_groups() -> None:
    method = _tiny()
    groups = method.param_groups()
    assert len(groups) == 1 and groups[0]["weight_decay"] is True
    ids = [id(p) for p in groups[0]["params"]]
    assert ids == [id(p) for p in method.student.parameters()]
    assert not set(ids) & {id(p) for p in method.teacher.parameters()}


def test_autocast_keeps_losses_fp32() -> None:
    method = _tiny()
    b = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method.compute(b["x1"], b["x2"])
    assert out.s1.proj.dtype == torch.float32
    for k, v in out.terms.items():
        assert v.dtype == torch.float32 and torch.isfinite(v), k
    out.terms["loss"].backward()
    assert method.student.trans.net[0].net[3].pos_emb.height.grad is not None


def test_convert_sync_batchnorm_keeps_tstream_local() -> None:
    b = _batch()
    for sync_tstream in (False, True):
        method = _tiny(sync_tstream_bn=sync_tstream)
        with torch.no_grad():
            ref = method(b)["loss"]
        params = [id(p) for p in method.parameters()]
        method.convert_sync_batchnorm()
        assert [id(p) for p in method.parameters()] == params
        for enc in (method.student, method.teacher):
            for part in (enc.backbone, enc.fc1, enc.fc2):
                kinds = {
                    type(m)
                    for m in part.modules()
                    if isinstance(m, nn.modules.batchnorm._BatchNorm)
                }
                assert kinds == {nn.SyncBatchNorm}
            kinds = {
                type(m)
                for m in enc.trans.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)
            }
            assert kinds == ({nn.SyncBatchNorm} if sync_tstream else {nn.BatchNorm2d})
        # single process: SyncBatchNorm falls back to plain batch norm, same numbers
        with torch.no_grad():
            torch.testing.assert_close(method(b)["loss"], ref)


def test_export_backbone_is_the_student_timm_resnet() -> None:
    method = _tiny()
    b = _batch()
    with torch.no_grad():
        method.compute(b["x1"], b["x2"])  # non-trivial running stats
    _perturb_student(method)
    method.convert_sync_batchnorm()
    model = method.export_backbone()
    assert isinstance(model, timm.models.ResNet) and model.num_classes == 0
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    ref = timm.create_model("resnet50", num_classes=0, layers=[1, 1, 1, 1])
    assert list(model.state_dict()) == list(ref.state_dict())
    for k, v in method.student.backbone.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    method.eval()
    x = b["x1"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), method.student(x).pooled, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(model(x), method.teacher(x).pooled, atol=1e-3)


def test_official_checkpoint_round_trip(tmp_path) -> None:
    src = _tiny()
    b = _batch()
    with torch.no_grad():
        src.compute(b["x1"], b["x2"])
    _perturb_student(src)
    src.update_teacher(0.9)  # teacher now differs from both the student and a fresh init
    opt = torch.optim.SGD(src.param_groups()[0]["params"], lr=0.1, momentum=0.9, weight_decay=1e-4)
    src(b)["loss"].backward()
    opt.step()
    sd = to_official_state_dict(src)
    assert all(k.startswith((STUDENT_PREFIX, TEACHER_PREFIX)) for k in sd)
    assert (
        "module.student_encoder.conv1.weight" in sd
        and "module.teacher_encoder.trans.net.0.net.3.to_qkv.weight" in sd
    )
    assert all(from_official_key(official_key(k)) == k for k in src.state_dict())
    path = tmp_path / "last_epoch_ckpt.pth.tar"
    torch.save({"start_epoch": 7, "model": sd, "optimizer": opt.state_dict()}, path)

    dst = _tiny()
    dst.load_state_dict(CareMethod(CareConfig.smoke()).state_dict())  # a different random init
    info = load_official_checkpoint(dst, path)
    assert info["start_epoch"] == 7 and info["num_tensors"] == len(sd)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    opt2 = torch.optim.SGD(dst.param_groups()[0]["params"], lr=0.1, momentum=0.9, weight_decay=1e-4)
    opt2.load_state_dict(info["optimizer"])
    with torch.no_grad():
        a, c = src.compute(b["x1"], b["x2"]), dst.compute(b["x1"], b["x2"])
    for k in LOSS_KEYS:
        assert torch.equal(a.terms[k], c.terms[k]), k
    # in-memory dicts (no ``module.`` prefix, as saved without DDP) load too
    stripped = {k[len("module.") :]: v for k, v in sd.items()}
    assert load_official_checkpoint(_tiny(), {"model": stripped})["start_epoch"] is None


def test_official_checkpoint_errors() -> None:
    src = _tiny()
    sd = dict(to_official_state_dict(src))
    with pytest.raises(ValueError, match="'model' entry"):
        load_official_checkpoint(_tiny(), {"state_dict": sd})
    broken = dict(sd)
    del broken["module.student_encoder.fc1.7.bias"]
    broken["module.student_encoder.extra.weight"] = torch.zeros(1)
    broken["module.something_else.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        load_official_checkpoint(_tiny(), {"model": broken})
    msg = str(err.value)
    assert "missing 1: module.student_encoder.fc1.7.bias" in msg
    assert "module.student_encoder.extra.weight" in msg and "module.something_else.weight" in msg
    # a 64-px model's position embeddings do not fit a 96-px model (fmap 6)
    with pytest.raises(ValueError, match=r"shape mismatch.*pos_emb.*img_size 209-224"):
        load_official_checkpoint(_tiny(img_size=96), {"model": sd})
    bad_opt = {"state": {}, "param_groups": [{"params": list(range(5))}]}
    with pytest.raises(ValueError, match="one group of"):
        load_official_checkpoint(_tiny(), {"model": sd, "optimizer": bad_opt})


def test_config_round_trip() -> None:
    cfg = CareConfig.smoke()
    data = json.loads(json.dumps(cfg.to_dict()))
    assert CareConfig.from_dict(data) == cfg
    assert CareConfig().fmap_size == 14 and CareConfig(img_size=209).fmap_size == 14
    assert CareConfig(img_size=64).fmap_size == 4
    with pytest.raises(ValueError, match="unknown CareConfig fields"):
        CareConfig.from_dict({"arch": "resnet50", "bogus": 1})
    with pytest.raises(ValueError, match="attention"):
        CareConfig(attention="flash")
    with pytest.raises(ValueError, match="not a CareMethod state-dict key"):
        official_key("student.head.weight")


def test_moved_names_stay_importable_from_the_method_module() -> None:
    """The key layout has one owner (the converter); the method module re-exports it, the BYOL
    term and the networks under their old names."""
    for name in (
        "STUDENT_PREFIX",
        "TEACHER_PREFIX",
        "official_key",
        "from_official_key",
        "to_official_state_dict",
    ):
        assert getattr(care_method, name) is getattr(care_layout, name), name
    assert care_method.byol_per_sample is byol_per_sample
    for name in care_method.__all__:
        assert hasattr(care_method, name), name


def test_to_official_state_dict_takes_a_state_dict() -> None:
    method = _tiny()
    by_module = to_official_state_dict(method)
    by_state = to_official_state_dict(method.state_dict())
    assert list(by_module) == list(by_state)
    assert all(
        by_module[k] is by_state[k] or torch.equal(by_module[k], by_state[k]) for k in by_state
    )


def test_converter_does_not_import_the_training_package() -> None:
    code = (
        "import sys, selfsup_zoo.convert.care; "
        "bad = [m for m in sys.modules if m.startswith('selfsup_zoo.training')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
