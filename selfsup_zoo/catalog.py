"""The catalog: every checkpoint the zoo knows, released upstream or still to be regenerated.

One row per checkpoint, named the timm way ``<model>.<tag>``. Everything else is derived from this
table and never written twice: the timm registration (:mod:`selfsup_zoo.models`), the
``hubconf.py`` entrypoints, the model cards and the README's zoo table
(:mod:`selfsup_zoo.cards`), and the names that ``selfsup_zoo.training.reproduce`` accepts. The
commands that produce a checkpoint's weights (:func:`convert_command`, :func:`regenerate_command`)
are derived here too, so that error messages and model cards quote the same text.

Facts come from the papers' official repositories (CARE: ChongjianGE/CARE README; SERE:
MCG-NKU/SERE README), recorded in each row with the protocol that produced the number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import UnknownNameError, did_you_mean

#: Hugging Face organisation that hosts the zoo's weights (one model repo per checkpoint).
HF_ORG = "selfsup-zoo"
#: File name of the weights inside every hub folder / Hub repo (timm's layout).
WEIGHTS_FILENAME = "model.safetensors"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CARE_PAPER = (
    "Revitalizing CNN Attention via Transformers in Self-Supervised Visual Representation Learning"
)
CARE_ARXIV = "arXiv:2110.05340"
CARE_CODE = "https://github.com/ChongjianGE/CARE"
SERE_PAPER = "SERE: Exploring Feature Self-relation for Self-supervised Transformers"
SERE_ARXIV = "arXiv:2206.05184"
SERE_CODE = "https://github.com/MCG-NKU/SERE"

CARE_LICENSE = "mit"
# SERE's LICENSE file is CC BY-NC 4.0 while its README says CC BY-NC-SA 4.0; the stricter reading
# (adding ShareAlike) satisfies both, so cards and cfgs carry it and quote both statements.
SERE_LICENSE = "cc-by-nc-sa-4.0"
SERE_LICENSE_NOTE = (
    "Upstream SERE weights: the repository's LICENSE file is CC BY-NC 4.0 while its README states "
    "CC BY-NC-SA 4.0 (non-commercial use only; commercial use needs the authors' permission). "
    "This zoo applies the stricter reading, CC BY-NC-SA 4.0."
)
CARE_LICENSE_NOTE = "Upstream CARE code and weights: MIT licence (Copyright (c) 2021 ChongjianGE)."

#: Where a checkpoint's weights come from upstream.
OFFICIAL = "official"  # released by the authors; convert it with ``python -m selfsup_zoo.convert``
NOT_RELEASED = "not_released"  # reported in the paper/README but never released: regenerate it here

CARE_LINEAR_PROTOCOL = (
    "ImageNet-1k linear evaluation (official code): frozen student encoder in eval mode, "
    "Linear(2048, 1000) + BatchNorm1d, SGD lr 0.2 at batch 256, cosine, 80 epochs, "
    "224 px centre crop; best top-1 over the evaluations at epochs 1, 2, 5, 7, 10, 20, ..., 80"
)
SERE_FINETUNE_PROTOCOL = (
    "ImageNet-1k full fine-tuning for 100 epochs with the MAE code base (pooling not stated "
    "upstream)"
)
IMAGENET_S_PROTOCOL = (
    "ImageNet-S semi-supervised semantic segmentation (919 classes + background), fine-tuned "
    "from the SSL weights with LUSSeg/ImageNetSegModel; mIoU"
)


@dataclass(frozen=True)
class Result:
    """One number reported upstream, with the protocol and the place it was published."""

    metric: str  # e.g. "top1", "top5", "miou_val"
    value: float
    protocol: str
    source: str  # where the number is published


@dataclass(frozen=True)
class CatalogEntry:
    """One checkpoint of the zoo."""

    name: str  # "<model>.<tag>", e.g. "care_resnet50.in1k_ep100"
    method: str  # "care" | "sere"
    timm_arch: str  # timm's own architecture that holds the weights: "resnet50", ...
    model_args: Mapping[str, Any]  # extra timm kwargs for ``timm_arch`` (empty for all rows today)
    epochs: int  # pre-training epochs
    license: str  # SPDX-like id used by Hugging Face model cards
    license_note: str
    results: tuple[Result, ...]
    upstream: str  # OFFICIAL or NOT_RELEASED
    upstream_detail: str  # what exactly exists upstream (file, where), in words
    recipe: str | None  # recipe that regenerates it (selfsup_zoo/training/recipes/<recipe>.toml)
    regenerate_note: str = ""  # how to regenerate when ``recipe`` is None
    num_classes: int = 0  # 0: backbone (pooled features); 1000: ImageNet linear classifier included
    sha256: str | None = None  # of model.safetensors once published on the Hub, else None
    published: bool = False  # True once ``hub_repo`` holds the weights
    hub_filename: str = WEIGHTS_FILENAME
    pretrained_cfg_extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def arch(self) -> str:
        """Registered zoo architecture, e.g. ``care_resnet50``."""
        return self.name.split(".", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def hub_repo(self) -> str:
        return f"{HF_ORG}/{self.name}"

    @property
    def paper_name(self) -> str:
        return CARE_PAPER if self.method == "care" else SERE_PAPER

    @property
    def paper_ids(self) -> str:
        return CARE_ARXIV if self.method == "care" else SERE_ARXIV

    @property
    def origin_url(self) -> str:
        return CARE_CODE if self.method == "care" else SERE_CODE

    def pretrained_cfg(self) -> dict[str, Any]:
        """timm pretrained cfg for this checkpoint (input, normalisation, head, licence, source).

        Returns:
            Keyword arguments of ``timm.models.PretrainedCfg`` (evaluation transform of the
            method's official code, ImageNet statistics, Hub repo and file).
        """
        if self.method == "care":
            # Evaluation transform of the official code: Resize(256) + CenterCrop(224), bilinear.
            cfg: dict[str, Any] = dict(
                input_size=(3, 224, 224),
                pool_size=(7, 7),
                interpolation="bilinear",
                crop_pct=0.875,
                first_conv="conv1",
                classifier="fc",
            )
        else:
            # DINO/iBOT/MAE evaluation convention with ImageNet statistics (not timm's AugReg 0.5).
            cfg = dict(
                input_size=(3, 224, 224),
                pool_size=None,
                fixed_input_size=True,
                interpolation="bicubic",
                crop_pct=0.875,
                first_conv="patch_embed.proj",
                classifier="head",
            )
        cfg.update(
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            num_classes=self.num_classes,
            license=self.license,
            paper_name=self.paper_name,
            paper_ids=self.paper_ids,
            origin_url=self.origin_url,
            hf_hub_id=self.hub_repo,
            hf_hub_filename=self.hub_filename,
            notes=(self.license_note,),
        )
        cfg.update(self.pretrained_cfg_extra)
        return cfg


def _care_results(top1: float, top5: float) -> tuple[Result, ...]:
    src = "CARE official README (ChongjianGE/CARE @3187afb), ImageNet linear evaluation table"
    return (
        Result("top1", top1, CARE_LINEAR_PROTOCOL, src),
        Result("top5", top5, CARE_LINEAR_PROTOCOL, src),
    )


# README linear-evaluation table (top-1, top-5) per backbone and epochs (docs/methods/care.md §7.1).
_CARE_TABLE: dict[tuple[str, str], dict[int, tuple[float, float]]] = {
    ("care_resnet50", "resnet50"): {
        100: (72.02, 90.02),
        200: (73.78, 91.50),
        400: (74.68, 91.97),
        800: (75.56, 92.32),
    },
    # Official width=2 doubles only the bottleneck width: that is timm's wide_resnet50_2, not
    # SimCLR's ResNet-50 (2x) (docs/methods/care.md §1.2, inferred from the code's `width`
    # semantics).
    ("care_wide_resnet50_2", "wide_resnet50_2"): {
        100: (73.51, 91.66),
        200: (75.00, 92.22),
        400: (76.48, 92.99),
        800: (77.04, 93.22),
    },
    ("care_resnet101", "resnet101"): {
        100: (73.54, 91.63),
        200: (75.89, 92.70),
        400: (76.85, 93.31),
        800: (77.23, 93.52),
    },
    # 200 and 400 epochs both list top-5 93.63 upstream (possibly a copy error); quoted as
    # published.
    ("care_resnet152", "resnet152"): {
        100: (74.59, 92.09),
        200: (76.58, 93.63),
        400: (77.40, 93.63),
        800: (78.11, 93.81),
    },
}

_CARE_DRIVE_PRETRAIN = "1cOBdLFwcBEAY-f8wKtWeYapK1hFgnbCD"
_CARE_DRIVE_LINEAR = "1cCVCmAjYTapjiSxP5N85_Hbdz1kPl4Rd"
_SERE_DRIVE_S = "1pu7ASX7DKY3rB2HhJnDEOQpB7k6sAIMH"
_SERE_DRIVE_B = "1B3GBxlXq12r_E3ZWi8VvI2efwFYpNBev"


def _drive(file_id: str) -> str:
    return f"https://drive.google.com/file/d/{file_id}/view?usp=sharing"


def _build() -> dict[str, CatalogEntry]:
    rows: list[CatalogEntry] = []
    for (arch, timm_arch), by_epoch in _CARE_TABLE.items():
        for epochs, (top1, top5) in by_epoch.items():
            name = f"{arch}.in1k_ep{epochs}"
            released = arch == "care_resnet50" and epochs == 100
            rows.append(
                CatalogEntry(
                    name=name,
                    method="care",
                    timm_arch=timm_arch,
                    model_args={},
                    epochs=epochs,
                    license=CARE_LICENSE,
                    license_note=CARE_LICENSE_NOTE,
                    results=_care_results(top1, top5),
                    upstream=OFFICIAL if released else NOT_RELEASED,
                    upstream_detail=(
                        "Full pre-training checkpoint released by the authors on Google Drive "
                        f"({_drive(_CARE_DRIVE_PRETRAIN)}); the backbone is its student encoder."
                        if released
                        else "Reported in the official README but never released (marked 'wip' "
                        "there since 2021): regenerate it with the recipe."
                    ),
                    recipe=name,
                )
            )
            if released:
                rows.append(
                    CatalogEntry(
                        name=f"{arch}.in1k_ep{epochs}_lincls",
                        method="care",
                        timm_arch=timm_arch,
                        model_args={},
                        epochs=epochs,
                        license=CARE_LICENSE,
                        license_note=CARE_LICENSE_NOTE,
                        results=_care_results(top1, top5),
                        upstream=OFFICIAL,
                        upstream_detail=(
                            "Linear-evaluation model released by the authors on Google Drive "
                            f"({_drive(_CARE_DRIVE_LINEAR)}): frozen encoder + Linear(2048, 1000) "
                            "+ BatchNorm1d(1000), folded into timm's `fc` by the converter."
                        ),
                        recipe=None,
                        regenerate_note=(
                            "Not a pre-training run: train the linear classifier on top of "
                            f"{name} with the official linear-evaluation protocol."
                        ),
                        num_classes=1000,
                    )
                )
    sere_common: dict[str, Any] = dict(
        method="sere",
        model_args={},
        epochs=100,
        license=SERE_LICENSE,
        license_note=SERE_LICENSE_NOTE,
        upstream=OFFICIAL,
    )
    sere_src = "SERE official README (MCG-NKU/SERE @e20f37f)"
    rows.append(
        CatalogEntry(
            name="sere_vit_small.in1k_ep100",
            timm_arch="vit_small_patch16_224",
            results=(
                Result("top1", 81.5, SERE_FINETUNE_PROTOCOL, sere_src),
                Result("miou_val", 41.0, IMAGENET_S_PROTOCOL, "LUSSeg/ImageNetSegModel MODEL_ZOO"),
                Result("miou_test", 40.2, IMAGENET_S_PROTOCOL, "LUSSeg/ImageNetSegModel MODEL_ZOO"),
            ),
            upstream_detail=(
                "'Backbone' file released by the authors on Google Drive "
                f"({_drive(_SERE_DRIVE_S)}); also mirrored as "
                "`sere_pretrained_vit_small_ep100.pth` in LUSSeg/ImageNetSegModel's release 'vit'. "
                "Teacher or student is not documented upstream (the converter reports which one a "
                "file holds)."
            ),
            recipe="sere_vit_small.in1k_ep100",
            **sere_common,
        )
    )
    rows.append(
        CatalogEntry(
            name="sere_vit_base.in1k_ep100",
            timm_arch="vit_base_patch16_224",
            results=(Result("top1", 83.7, SERE_FINETUNE_PROTOCOL, sere_src),),
            upstream_detail=(
                "'Backbone' file released by the authors on Google Drive "
                f"({_drive(_SERE_DRIVE_B)}). Teacher or student is not documented upstream (the "
                "converter reports which one a file holds)."
            ),
            recipe="sere_vit_base.in1k_ep100",
            **sere_common,
        )
    )
    return {row.name: row for row in rows}


#: name -> entry, in registration order (the first tag of each architecture is its default).
CATALOG: Mapping[str, CatalogEntry] = MappingProxyType(_build())


def architectures() -> list[str]:
    """Zoo architectures, in catalog order.

    Returns:
        The registered names (``care_resnet50``, ..., ``sere_vit_base``), each once.
    """
    return list(dict.fromkeys(entry.arch for entry in CATALOG.values()))


def entries_for(arch: str) -> list[CatalogEntry]:
    """Every checkpoint of one zoo architecture.

    Args:
        arch: a zoo architecture, e.g. ``care_resnet50``.

    Returns:
        Its catalog rows in catalog order (empty for an unknown architecture).
    """
    return [entry for entry in CATALOG.values() if entry.arch == arch]


def default_entry(arch: str) -> CatalogEntry:
    """The checkpoint ``timm.create_model(arch, pretrained=True)`` loads: its first catalog row.

    Args:
        arch: a zoo architecture, e.g. ``sere_vit_small``.

    Returns:
        The default checkpoint of ``arch``.

    Raises:
        UnknownNameError: ``arch`` is not a zoo architecture.
    """
    rows = entries_for(arch)
    if not rows:
        raise UnknownNameError(unknown_name_message(arch, architectures(), "architecture"))
    return rows[0]


def unknown_name_message(name: str, known: list[str], what: str = "checkpoint") -> str:
    """``Unknown <what> '<name>'. Did you mean ...? Known <what>s: ...`` for an unknown name.

    Args:
        name: the name that was asked for.
        known: every valid name, in the order to list them.
        what: the kind of name ("checkpoint", "architecture", "model").

    Returns:
        The message, with the closest known names suggested first (:func:`did_you_mean`).
    """
    return f"Unknown {what} {name!r}.{did_you_mean(name, known)} Known {what}s: {', '.join(known)}."


def get_entry(name: str) -> CatalogEntry:
    """Look up a checkpoint; an unknown name raises with the closest known names.

    Args:
        name: ``<arch>.<tag>``, or a bare ``<arch>`` for its default tag.

    Returns:
        The catalog row.

    Raises:
        UnknownNameError: no such checkpoint or architecture.
    """
    if name in CATALOG:
        return CATALOG[name]
    if "." not in name and name in architectures():
        return default_entry(name)
    raise UnknownNameError(unknown_name_message(name, list(CATALOG)))


# --------------------------------------------------------------------------------------------------
# Commands a reader needs when the weights are not on the Hub


def hub_folder(entry: CatalogEntry) -> str:
    """Local hub folder that the converter and ``reproduce`` write for ``entry``.

    Args:
        entry: the checkpoint.

    Returns:
        The relative path ``hub/<arch>.<tag>``.
    """
    return f"hub/{entry.name}"


def convert_command(entry: CatalogEntry, out_dir: str | None = None) -> str | None:
    """Command that converts the official release of ``entry`` into a hub folder.

    Args:
        entry: the checkpoint.
        out_dir: hub folder the command writes (default: :func:`hub_folder`).

    Returns:
        The shell command, or None if the authors released no file for ``entry``.
    """
    if entry.upstream != OFFICIAL:
        return None
    # --install also copies the folder into the local weights directory, where
    # ``timm.create_model(<name>, pretrained=True)`` looks before the Hub.
    return (
        f"python -m selfsup_zoo.convert {entry.method} <downloaded file> "
        f"{out_dir or hub_folder(entry)} --checkpoint {entry.name} --install"
    )


def regenerate_command(entry: CatalogEntry) -> str | None:
    """Command that regenerates ``entry`` by pre-training.

    Args:
        entry: the checkpoint.

    Returns:
        The ``torchrun`` command line, or None if ``entry`` has no recipe.
    """
    if entry.recipe is None:
        return None
    return f"torchrun --nproc_per_node=<gpus> -m selfsup_zoo.training.reproduce {entry.recipe}"
