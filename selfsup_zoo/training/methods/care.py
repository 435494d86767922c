"""CARE: CNN Attention REvitalization (Ge et al., NeurIPS 2021), re-implemented on timm ResNets.

One encoder = a timm ``ResNet`` (the C-stream, ``num_classes=0``) whose layer3 output also feeds a
BoTNet-style transformer stack (the T-stream, ``trans``), plus two MLP heads: ``fc1`` on the pooled
layer4 feature and ``fc2`` on the pooled T-stream map. The student carries a predictor in each head,
the teacher (an EMA of the student) does not. Loss per iteration (spec §3.4)::

    con  = BYOL(q1, k1) + BYOL(q2, k2)                  # C-stream, summed over the two view pairs
    con2 = BYOL(att_q1, att_k1) + BYOL(att_q2, att_k2)  # T-stream
    fea  = MSE(q1, sg att_q1) + MSE(q2, sg att_q2) + MSE(k1, att_k1) + MSE(k2, att_k2)
    loss = con + con2 + 100 * fea

Module and parameter names are chosen so that the official checkpoint keys map by identity once the
``module.student_encoder.`` / ``module.teacher_encoder.`` prefix is replaced (encoder keys additionally
live under ``backbone.`` here, because the C-stream is a separate timm model that can be exported as is).
Section numbers (§) refer to the project's CARE implementation specification.

Smoke-size model for CPU runs (a few seconds per step at batch 4, 64 px): :meth:`CareConfig.smoke`.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import timm
import torch
import torch.nn.functional as F
from torch import nn

from selfsup_zoo.hub import compare_keys

from .base import ConfigDict, Method, StepInfo

__all__ = [
    "CareConfig",
    "PositionEmbedding",
    "TStreamAttention",
    "TStreamBlock",
    "TStream",
    "CareEncoder",
    "EncoderOutput",
    "CareOutputs",
    "CareMethod",
    "byol_per_sample",
    "official_key",
    "from_official_key",
    "to_official_state_dict",
    "load_official_checkpoint",
]

log = logging.getLogger(__name__)

STUDENT_PREFIX = "module.student_encoder."
TEACHER_PREFIX = "module.teacher_encoder."
_OWN_HEAD_PREFIXES = ("trans.", "fc1.", "fc2.")
ATTENTION_IMPLS = ("sdpa", "einsum")


# ---------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------


@dataclass
class CareConfig(ConfigDict):
    """Architecture and loss weights of a CARE model; defaults are the official recipe (spec §3, §5).

    ``arch``/``model_args`` go to ``timm.create_model`` (official runs: ``resnet50``; the README's other
    rows map to ``wide_resnet50_2``, ``resnet101``, ``resnet152``, spec §1.5). ``img_size`` only fixes the
    T-stream position embeddings: the layer3 map side is ``ceil(img_size / 16)`` (14 at 224 px, the only
    size official weights fit, spec §3.2 / §9 #7). ``sync_tstream_bn`` is off in the official recipe
    (T-stream BNs use per-process statistics, §9 #5); switch it on only to make a multi-process run
    numerically equal to a single-process one.

    ``attention`` selects how the T-stream attention is evaluated: ``"sdpa"`` (default, fused
    ``scaled_dot_product_attention``) or ``"einsum"`` (the official operation order, explicit logits;
    slower). Both compute the same function; ``"einsum"`` exists because the golden parity case of spec
    §10 is ill-conditioned in float32 (BatchNorm1d over two samples, near-one-hot softmax): re-ordering the
    floating-point operations moves the fea/con2 terms by up to ~6e-5 relative at batch 2 (evaluating in
    float64 moves con2 by ~1e-3), so only the official order reproduces those figures to 1e-5. At batch 4
    both paths give the official losses to <1e-6 relative.
    """

    arch: str = "resnet50"
    model_args: dict[str, Any] = field(default_factory=dict)
    img_size: int = 224
    tstream_dim_out: int = 2048
    tstream_proj_factor: int = 4
    tstream_heads: int = 4
    tstream_dim_head: int = 128
    tstream_layers: int = 5
    hidden_dim: int = 4096
    out_dim: int = 256
    lambda_fea: float = 100.0
    con_weight: float = 1.0
    con2_weight: float = 1.0
    sync_tstream_bn: bool = False
    attention: str = "sdpa"

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_IMPLS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLS}, got {self.attention!r}")

    @property
    def fmap_size(self) -> int:
        """Side of the layer3 map (stride 16, every timm ResNet down-sampling rounds up)."""
        return math.ceil(self.img_size / 16)

    @classmethod
    def smoke(cls) -> CareConfig:
        """A non-official tiny model for CPU smoke runs and tests: ResNet-50 with one block per stage,
        64-px views (T-stream map 4x4), one narrow T-stream block and small heads. Official checkpoints
        do not load into it."""
        return cls(
            arch="resnet50",
            model_args={"layers": [1, 1, 1, 1]},
            img_size=64,
            tstream_dim_out=512,
            tstream_layers=1,
            tstream_heads=2,
            tstream_dim_head=32,
            hidden_dim=256,
            out_dim=64,
        )


# ---------------------------------------------------------------------------------------------------
# T-stream (spec §3.2)
# ---------------------------------------------------------------------------------------------------


class PositionEmbedding(nn.Module):
    """Absolute 2-D position embedding P[row * W + col] = height[row] + width[col], shared by heads.

    Parameter names ``height``/``width`` match the official ``pos_emb`` keys.
    """

    def __init__(self, fmap_size: int, dim_head: int) -> None:
        super().__init__()
        scale = dim_head**-0.5
        # official init: standard normal scaled by dim_head^-1/2
        self.height = nn.Parameter(torch.randn(fmap_size, dim_head) * scale)
        self.width = nn.Parameter(torch.randn(fmap_size, dim_head) * scale)

    def forward(self) -> torch.Tensor:
        emb = self.height[:, None, :] + self.width[None, :, :]
        return emb.reshape(-1, emb.shape[-1])


class TStreamAttention(nn.Module):
    """Multi-head self-attention over the spatial positions of a map (official ``Attention``).

    The official logits are ``q_s k^T + q_s P^T`` with ``q_s = q * dim_head^-1/2``; since that equals
    ``q_s (k + P)^T`` the position term is folded into the keys, which lets the whole thing run as one
    ``scaled_dot_product_attention`` call (fused kernel, no explicit [HW, HW] logits tensor).
    Channel layout of q/k/v is head-major (channel = head * dim_head + d); tokens are row-major.
    """

    def __init__(
        self, dim: int, fmap_size: int, heads: int, dim_head: int, impl: str = "sdpa"
    ) -> None:
        super().__init__()
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
        self.impl = impl
        self.fmap_size = fmap_size
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        self.to_qkv = nn.Conv2d(dim, heads * dim_head * 3, 1, bias=False)
        self.pos_emb = PositionEmbedding(fmap_size, dim_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if h != self.fmap_size or w != self.fmap_size:
            raise ValueError(
                f"T-stream attention built for a {self.fmap_size}x{self.fmap_size} map, got {h}x{w}"
            )
        n = h * w
        q, k, v = self.to_qkv(x).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.heads, self.dim_head, n).transpose(-1, -2) for t in (q, k, v))
        # cast: under autocast k is low precision while the embedding parameter stays fp32
        pos = self.pos_emb().to(k.dtype)
        if self.impl == "sdpa":
            out = F.scaled_dot_product_attention(q, k + pos, v, scale=self.scale)
        else:
            # official order: scale q, content logits, then add the position logits, softmax
            q = q * self.scale
            sim = torch.einsum("bhid,bhjd->bhij", q, k) + torch.einsum("bhid,jd->bhij", q, pos)
            out = torch.einsum("bhij,bhjd->bhid", sim.softmax(dim=-1), v)
        return out.transpose(-1, -2).reshape(b, self.heads * self.dim_head, h, w)


class TStreamBlock(nn.Module):
    """One BoTNet bottleneck block; ``shortcut`` and ``net`` indices follow the official keys."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        fmap_size: int,
        proj_factor: int,
        downsample: bool,
        heads: int,
        dim_head: int,
        attention: str = "sdpa",
    ) -> None:
        super().__init__()
        if dim != dim_out or downsample:
            kernel, stride, padding = (3, 2, 1) if downsample else (1, 1, 0)
            # the ReLU *inside* the shortcut is official (spec §9 #6); the block applies ReLU again
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(dim, dim_out, kernel, stride=stride, padding=padding, bias=False),
                nn.BatchNorm2d(dim_out),
                nn.ReLU(),
            )
        else:
            self.shortcut = nn.Identity()
        attn_dim_in = dim_out // proj_factor
        attn_dim_out = heads * dim_head
        self.net = nn.Sequential(
            nn.Conv2d(dim, attn_dim_in, 1, bias=False),
            nn.BatchNorm2d(attn_dim_in),
            nn.ReLU(),
            TStreamAttention(attn_dim_in, fmap_size, heads, dim_head, attention),
            nn.AvgPool2d(2) if downsample else nn.Identity(),
            nn.BatchNorm2d(attn_dim_out),
            nn.ReLU(),
            nn.Conv2d(attn_dim_out, dim_out, 1, bias=False),
            nn.BatchNorm2d(dim_out),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.net(x) + self.shortcut(x))


class TStream(nn.Module):
    """Stack of ``num_layers`` blocks; block 0 down-samples by 2 (stride-2 shortcut, 2x2 avg-pool after
    attention), later blocks attend over the ``fmap_size // 2`` map (the floor matches AvgPool2d)."""

    def __init__(
        self,
        dim: int,
        fmap_size: int,
        dim_out: int = 2048,
        proj_factor: int = 4,
        num_layers: int = 5,
        heads: int = 4,
        dim_head: int = 128,
        attention: str = "sdpa",
    ) -> None:
        super().__init__()
        if fmap_size < 2 and num_layers > 1:
            raise ValueError(
                f"T-stream needs a layer3 map of at least 2x2, got fmap_size={fmap_size}"
            )
        self.dim = dim
        self.fmap_size = fmap_size
        blocks = []
        for i in range(num_layers):
            first = i == 0
            blocks.append(
                TStreamBlock(
                    dim=dim if first else dim_out,
                    dim_out=dim_out,
                    fmap_size=fmap_size if first else fmap_size // 2,
                    proj_factor=proj_factor,
                    downsample=first,
                    heads=heads,
                    dim_head=dim_head,
                    attention=attention,
                )
            )
        self.net = nn.Sequential(*blocks)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official net effect (spec §1.1, §3.2, §9 #4): the ResNet init loop re-initialises every conv
        (kaiming normal, fan_out) and sets every BatchNorm2d to weight 1 / bias 0 *after* the T-stream
        zero-initialised ``net.8.weight``, so that gamma trains from 1. Position embeddings keep their
        randn * dim_head^-1/2 init."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        f = self.fmap_size
        if c != self.dim or h != f or w != f:
            raise ValueError(
                f"CARE T-stream expects a [N, {self.dim}, {f}, {f}] layer3 map (input images of "
                f"{16 * f - 15}-{16 * f} px, CareConfig.img_size={16 * f}), got [N, {c}, {h}, {w}] "
                f"(≈{16 * h} px); build the model with img_size matching the training views"
            )
        return self.net(x)


# ---------------------------------------------------------------------------------------------------
# encoder (C-stream + T-stream + heads)
# ---------------------------------------------------------------------------------------------------


def _mlp_head(in_dim: int, hidden_dim: int, out_dim: int, predictor: bool) -> nn.Sequential:
    """Projector (indices 0-3), student predictor appended in the same Sequential (4-7), spec §3.3.
    Linear layers keep PyTorch's default init, as officially."""
    layers: list[nn.Module] = [
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    ]
    if predictor:
        layers += [
            nn.Linear(out_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        ]
    return nn.Sequential(*layers)


def _normalize_fp32(x: torch.Tensor) -> torch.Tensor:
    # §9 #15: the official code normalises under fp16 autocast; we keep normalisation in fp32
    with torch.autocast(device_type=x.device.type, enabled=False):
        return F.normalize(x.float(), p=2, dim=1, eps=1e-12)


class EncoderOutput(NamedTuple):
    proj: torch.Tensor  # L2-normalised fc1(pool(layer4)): q (student) / k (teacher)
    att_proj: torch.Tensor  # L2-normalised fc2(pool(trans(layer3))): att_q / att_k
    tmap: torch.Tensor  # T-stream output map [B, tstream_dim_out, f/2, f/2]
    pooled: torch.Tensor  # pooled layer4 feature [B, num_features]


class CareEncoder(nn.Module):
    """timm ResNet (``backbone``) + T-stream on layer3 (``trans``) + heads ``fc1``/``fc2``."""

    def __init__(self, config: CareConfig, predictor: bool) -> None:
        super().__init__()
        # zero_init_last=False: the official ResNet has no zero-gamma on bn3 (spec §1.1)
        self.backbone = timm.create_model(
            config.arch, pretrained=False, num_classes=0, zero_init_last=False, **config.model_args
        )
        try:
            layer3_chs = next(
                int(fi["num_chs"]) for fi in self.backbone.feature_info if fi["module"] == "layer3"
            )
        except (AttributeError, StopIteration) as err:
            raise ValueError(f"{config.arch!r} is not a timm ResNet with a 'layer3' stage") from err
        self.trans = TStream(
            dim=layer3_chs,
            fmap_size=config.fmap_size,
            dim_out=config.tstream_dim_out,
            proj_factor=config.tstream_proj_factor,
            num_layers=config.tstream_layers,
            heads=config.tstream_heads,
            dim_head=config.tstream_dim_head,
            attention=config.attention,
        )
        self.fc1 = _mlp_head(
            self.backbone.num_features, config.hidden_dim, config.out_dim, predictor
        )
        self.fc2 = _mlp_head(config.tstream_dim_out, config.hidden_dim, config.out_dim, predictor)

    def forward(self, x: torch.Tensor) -> EncoderOutput:
        bb = self.backbone
        x = bb.maxpool(bb.act1(bb.bn1(bb.conv1(x))))
        x = bb.layer3(bb.layer2(bb.layer1(x)))
        tmap = self.trans(x)
        x = bb.layer4(x)
        pooled = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        t_pooled = torch.flatten(F.adaptive_avg_pool2d(tmap, 1), 1)
        return EncoderOutput(
            proj=_normalize_fp32(self.fc1(pooled)),
            att_proj=_normalize_fp32(self.fc2(t_pooled)),
            tmap=tmap,
            pooled=pooled,
        )


# ---------------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------------


def byol_per_sample(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """2 - 2 <p, z> per sample for L2-normalised p, z (= ||p - z||^2, in [0, 4])."""
    return 2.0 - 2.0 * (p * z).sum(dim=-1)


@dataclass
class CareOutputs:
    """Everything one CARE forward produces; ``terms`` is what :meth:`CareMethod.forward` returns."""

    s1: EncoderOutput  # student(x1): q1, att_q1
    s2: EncoderOutput  # student(x2): q2, att_q2
    t1: EncoderOutput  # teacher(x2): k1, att_k1
    t2: EncoderOutput  # teacher(x1): k2, att_k2
    mse: dict[str, torch.Tensor]  # the four fea terms, unweighted
    terms: dict[str, torch.Tensor]


class CareMethod(Method):
    """CARE student/teacher pair and losses (spec §3.4-§3.5); the engine owns schedules and EMA timing."""

    name = "care"

    def __init__(self, config: CareConfig | None = None) -> None:
        super().__init__()
        self.config = copy.deepcopy(config) if config is not None else CareConfig()
        self.student = CareEncoder(self.config, predictor=True)
        # The official teacher is built separately and then overwritten by momentum_update(m=0); a copy
        # of the student minus the predictors (indices 4-7) gives the same state (buffers are fresh in
        # both) without a second random init.
        teacher = copy.deepcopy(self.student)
        teacher.fc1 = teacher.fc1[:4]
        teacher.fc2 = teacher.fc2[:4]
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher = teacher

    def set_attention(self, impl: str) -> None:
        """Switch every T-stream attention (student and teacher) between ``"sdpa"`` and ``"einsum"``;
        see :class:`CareConfig` for why both exist. Parameters are untouched."""
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLS}, got {impl!r}")
        self.config.attention = impl
        for module in self.modules():
            if isinstance(module, TStreamAttention):
                module.impl = impl

    # -- forward ------------------------------------------------------------------------------------

    def compute(self, x1: torch.Tensor, x2: torch.Tensor) -> CareOutputs:
        """Student on each view separately (per-view BN statistics, §9 #18), teacher on swapped views."""
        cfg = self.config
        s1 = self.student(x1)
        s2 = self.student(x2)
        with torch.no_grad():
            t1 = self.teacher(x2)
            t2 = self.teacher(x1)
        with torch.autocast(device_type=x1.device.type, enabled=False):
            con = (
                byol_per_sample(s1.proj, t1.proj).mean() + byol_per_sample(s2.proj, t2.proj).mean()
            )
            con2 = (
                byol_per_sample(s1.att_proj, t1.att_proj).mean()
                + byol_per_sample(s2.att_proj, t2.att_proj).mean()
            )
            # the T-stream supervises the C-stream: its output is a stop-gradient target. The two teacher
            # terms are no-grad constants; they only shift the logged value (§9 #2).
            mse = {
                "q1": F.mse_loss(s1.proj, s1.att_proj.detach()),
                "q2": F.mse_loss(s2.proj, s2.att_proj.detach()),
                "k1": F.mse_loss(t1.proj, t1.att_proj),
                "k2": F.mse_loss(t2.proj, t2.att_proj),
            }
            fea = mse["q1"] + mse["q2"] + mse["k1"] + mse["k2"]
            weighted_fea = cfg.lambda_fea * fea
            loss = cfg.con_weight * con + cfg.con2_weight * con2 + weighted_fea
        terms = {
            "loss": loss,
            "con_loss": con.detach(),
            "con2_loss": con2.detach(),
            # logged like the official code: already multiplied by lambda_fea
            "fea_loss": weighted_fea.detach(),
        }
        return CareOutputs(s1=s1, s2=s2, t1=t1, t2=t2, mse=mse, terms=terms)

    def forward(
        self, batch: dict[str, Any], info: StepInfo | None = None
    ) -> dict[str, torch.Tensor]:
        return self.compute(batch["x1"], batch["x2"]).terms

    # -- engine hooks -------------------------------------------------------------------------------

    def param_groups(self) -> list[dict[str, Any]]:
        # §9 #8: one group, weight decay on everything (BN, biases, position embeddings included)
        return [
            {"params": list(self.student.parameters()), "weight_decay": True, "name": "student"}
        ]

    def ema_pairs(self) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """(name, teacher tensor, student tensor) for every teacher parameter, paired by name (§3.5,
        §9 #16). The teacher's parameter set is exactly the EMA'd set: encoder, T-stream, projectors.
        Student predictors have no partner; BN buffers are not parameters and are never averaged."""
        student = dict(self.student.named_parameters())
        return [(n, t, student[n]) for n, t in self.teacher.named_parameters()]

    def convert_sync_batchnorm(self) -> None:
        """Encoder and head BNs become SyncBatchNorm, the T-stream's stay per-process (§9 #5)."""
        convert = nn.SyncBatchNorm.convert_sync_batchnorm
        for enc in (self.student, self.teacher):
            enc.backbone = convert(enc.backbone)
            enc.fc1 = convert(enc.fc1)
            enc.fc2 = convert(enc.fc2)
            if self.config.sync_tstream_bn:
                enc.trans = convert(enc.trans)

    def export_backbone(self) -> nn.Module:
        """A fresh timm model (plain BatchNorm, CPU, eval mode) holding the **student** encoder's
        weights and BN running statistics: linear evaluation used the student (§2.1, §9 #10)."""
        model = timm.create_model(
            self.config.arch, pretrained=False, num_classes=0, **self.config.model_args
        )
        model.load_state_dict(self.student.backbone.state_dict(), strict=True)
        return model.eval()


# ---------------------------------------------------------------------------------------------------
# official checkpoint interop (spec §1.3)
# ---------------------------------------------------------------------------------------------------


def official_key(name: str) -> str:
    """Our ``CareMethod.state_dict()`` key -> official key (``module.student_encoder.<K>`` etc.)."""
    net, _, rest = name.partition(".")
    prefixes = {"student": STUDENT_PREFIX, "teacher": TEACHER_PREFIX}
    if net not in prefixes or not rest:
        raise ValueError(f"not a CareMethod state-dict key: {name!r}")
    if rest.startswith("backbone."):
        rest = rest[len("backbone.") :]
    elif not rest.startswith(_OWN_HEAD_PREFIXES):
        raise ValueError(f"not a CareMethod state-dict key: {name!r}")
    return prefixes[net] + rest


def from_official_key(key: str) -> str:
    """Official key -> our key; the inverse of :func:`official_key`. A missing ``module.`` prefix (a
    checkpoint saved without DDP) is accepted."""
    if not key.startswith("module."):
        key = "module." + key
    for ours, prefix in (("student", STUDENT_PREFIX), ("teacher", TEACHER_PREFIX)):
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            if not rest:
                break
            if rest.startswith(_OWN_HEAD_PREFIXES):
                return f"{ours}.{rest}"
            return f"{ours}.backbone.{rest}"
    raise ValueError(f"not an official CARE key: {key!r}")


def to_official_state_dict(method: CareMethod) -> dict[str, torch.Tensor]:
    """The method's state in the official ``model`` layout (902 entries for R50). Tensors share storage
    with the method."""
    return {official_key(k): v for k, v in method.state_dict().items()}


def _short_list(items: list[str], limit: int = 20) -> str:
    head = ", ".join(items[:limit])
    return head + (f", … (+{len(items) - limit} more)" if len(items) > limit else "")


def load_official_checkpoint(
    method: CareMethod, checkpoint: Mapping[str, Any] | str | os.PathLike[str]
) -> dict[str, Any]:
    """Load an official full pre-training checkpoint (``{"start_epoch", "model", "optimizer"}``,
    spec §1.3) into ``method``, strictly: any missing, unexpected or mis-shaped entry raises a
    ``ValueError`` naming the official keys. A path is read with ``selfsup_zoo.convert.load_official``
    (``torch.load(weights_only=True)``).

    Returns ``{"start_epoch": int | None, "num_tensors": int, "optimizer": dict | None}``. The official
    SGD state indexes the student parameters in the order of ``param_groups()[0]["params"]`` (both
    follow module registration: encoder, trans, fc1, fc2); it is checked against our shapes and
    returned unchanged for the engine to load.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        from selfsup_zoo.convert import load_official  # weights_only, clear refusal of pickles

        checkpoint = load_official(checkpoint)
    if not isinstance(checkpoint, Mapping) or "model" not in checkpoint:
        got = sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ValueError(f"expected an official CARE checkpoint with a 'model' entry, got {got}")
    official: Mapping[str, torch.Tensor] = checkpoint["model"]
    ours: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in official.items():
        try:
            ours[from_official_key(key)] = value
        except ValueError:
            unexpected.append(key)
    own = method.state_dict()
    missing_keys, extra_keys, wrong_keys = compare_keys(
        ours, {k: tuple(v.shape) for k, v in own.items()}
    )
    unexpected += sorted(official_key(k) for k in extra_keys)
    missing = sorted(official_key(k) for k in missing_keys)
    mismatched = [
        f"{official_key(k)} {tuple(ours[k].shape)} vs model {tuple(own[k].shape)}"
        for k in wrong_keys
    ]
    if missing or unexpected or mismatched:
        msg = [f"official CARE checkpoint does not match CareMethod({method.config.arch!r})"]
        if missing:
            msg.append(f"missing {len(missing)}: {_short_list(missing)}")
        if unexpected:
            msg.append(f"unexpected {len(unexpected)}: {_short_list(unexpected)}")
        if mismatched:
            msg.append(f"shape mismatch {len(mismatched)}: {_short_list(mismatched)}")
            if any("pos_emb" in m for m in mismatched):
                msg.append("(position embeddings differ: official weights need img_size 209-224)")
        raise ValueError("; ".join(msg))
    method.load_state_dict({k: ours[k] for k in own}, strict=True)

    optimizer = checkpoint.get("optimizer")
    if optimizer is not None:
        _check_official_optimizer(method, optimizer)
    start_epoch = checkpoint.get("start_epoch")
    info = {
        "start_epoch": int(start_epoch) if start_epoch is not None else None,
        "num_tensors": len(ours),
        "optimizer": optimizer,
    }
    log.info("loaded official CARE checkpoint: %d tensors, start_epoch=%s", len(ours), start_epoch)
    return info


def _check_official_optimizer(method: CareMethod, state: Mapping[str, Any]) -> None:
    params = method.param_groups()[0]["params"]
    groups = state.get("param_groups", [])
    if len(groups) != 1 or len(groups[0].get("params", [])) != len(params):
        sizes = [len(g.get("params", [])) for g in groups]
        raise ValueError(
            f"official optimizer state should have one group of {len(params)} parameters, got {sizes}"
        )
    for pos, idx in enumerate(groups[0]["params"]):
        buf = state.get("state", {}).get(idx, {}).get("momentum_buffer")
        if buf is not None and tuple(buf.shape) != tuple(params[pos].shape):
            raise ValueError(
                f"optimizer momentum buffer {idx} has shape {tuple(buf.shape)}, "
                f"parameter {pos} has {tuple(params[pos].shape)}"
            )
