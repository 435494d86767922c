"""Model cards and the README's zoo table, generated from the catalog.

Every checkpoint of :data:`selfsup_zoo.catalog.CATALOG` gets a Hugging Face model card
(``model_cards/<arch>.<tag>.md``, YAML metadata at the top) and one row in the README's zoo table.
Nothing here is written by hand per checkpoint: edit the catalog, then run::

    python -m selfsup_zoo.cards           # rewrite model_cards/ and the README table
    python -m selfsup_zoo.cards --check   # exit 1 and list the files that drifted from the catalog

:func:`render_model_card` is also what the hub-folder writer puts in each folder's ``README.md``,
with the sha256 of the weights it just wrote and, for regenerated weights, the run's provenance.
"""

from __future__ import annotations

import argparse
import functools
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # a dependency of huggingface_hub, which the package requires

from selfsup_zoo import catalog
from selfsup_zoo.catalog import CatalogEntry, Result

_logger = logging.getLogger(__name__)

#: GitHub repository that ``torch.hub.load`` fetches ``hubconf.py`` from.
GITHUB_REPO = f"{catalog.HF_ORG}/selfsup-zoo"
#: Folder of the generated cards and the markers around the generated part of the README.
CARDS_DIR = "model_cards"
TABLE_START = "<!-- zoo-table:start -->"
TABLE_END = "<!-- zoo-table:end -->"
REGENERATE_COMMAND = "python -m selfsup_zoo.cards"


# --------------------------------------------------------------------------------------------------
# How each protocol and metric of the catalog is named in cards and in Hugging Face metadata
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Protocol:
    short: str  # short name for the README table
    task_type: str  # Hugging Face task id for model-index
    task_name: str
    dataset_name: str
    dataset_type: str


# Keyed by the catalog's protocol strings, so a new protocol in the catalog fails loudly here
# (and in tests) instead of producing a card with a made-up description.
_PROTOCOLS: dict[str, _Protocol] = {
    catalog.CARE_LINEAR_PROTOCOL: _Protocol(
        "IN-1k linear",
        "image-classification",
        "ImageNet-1k linear evaluation",
        "ImageNet-1k",
        "imagenet-1k",
    ),
    catalog.SERE_FINETUNE_PROTOCOL: _Protocol(
        "IN-1k fine-tune",
        "image-classification",
        "ImageNet-1k fine-tuning (100 epochs)",
        "ImageNet-1k",
        "imagenet-1k",
    ),
    catalog.IMAGENET_S_PROTOCOL: _Protocol(
        "ImageNet-S semi-sup. seg.",
        "image-segmentation",
        "ImageNet-S semi-supervised semantic segmentation",
        "ImageNet-S (919 classes)",
        "imagenet-s",
    ),
}

# metric id -> (label in prose, Hugging Face metric type, dataset split)
_METRICS: dict[str, tuple[str, str, str]] = {
    "top1": ("top-1", "accuracy", "validation"),
    "top5": ("top-5", "top_5_accuracy", "validation"),
    "miou_val": ("mIoU val", "mean_iou", "validation"),
    "miou_test": ("mIoU test", "mean_iou", "test"),
}

METHOD_TITLES = {"care": "CARE", "sere": "SERE"}


def _protocol(result: Result) -> _Protocol:
    try:
        return _PROTOCOLS[result.protocol]
    except KeyError:
        raise KeyError(
            f"No card description for protocol {result.protocol!r}: add it to "
            "selfsup_zoo.cards._PROTOCOLS"
        ) from None


def _metric(result: Result) -> tuple[str, str, str]:
    try:
        return _METRICS[result.metric]
    except KeyError:
        raise KeyError(
            f"No card description for metric {result.metric!r}: add it to "
            "selfsup_zoo.cards._METRICS"
        ) from None


def _source_url(result: Result, entry: CatalogEntry) -> str:
    # Sources name the repository that publishes the number ("owner/name ..."); link to it.
    match = re.search(r"\b([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)\b", result.source)
    return f"https://github.com/{match.group(1)}" if match else entry.origin_url


def _fmt(result: Result) -> str:
    """The value with as many decimals as its protocol's table uses upstream (91.50, not 91.5)."""
    return f"{result.value:.{_decimals(result.protocol)}f}"


@functools.cache
def _decimals(protocol: str) -> int:
    # Floats lose trailing zeros; the published precision is the most any number of the same
    # protocol in the catalog shows.
    return max(
        (
            len(repr(r.value).partition(".")[2].rstrip("0"))
            for entry in catalog.CATALOG.values()
            for r in entry.results
            if r.protocol == protocol
        ),
        default=2,
    )


# --------------------------------------------------------------------------------------------------
# Facts measured on the timm architecture (parameters, feature dim, feature maps)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ModelFacts:
    params: int
    num_features: int
    feature_info: tuple[tuple[int, int], ...]  # (channels, reduction) per feature level


def _model_facts(
    timm_arch: str, model_args: Mapping[str, Any] | None, num_classes: int | None
) -> _ModelFacts | None:
    from .hub import meta_model  # late: keeps this module's import light

    try:
        # The meta device allocates nothing: counting ViT-B's parameters this way takes milliseconds.
        model = meta_model(timm_arch, num_classes, model_args)
    except Exception as err:  # a smoke run may name an architecture timm cannot build here
        _logger.warning("could not build %s to describe it: %s", timm_arch, err)
        return None
    info = tuple(
        (int(f["num_chs"]), int(f["reduction"])) for f in getattr(model, "feature_info", [])
    )
    return _ModelFacts(
        params=sum(p.numel() for p in model.parameters()),
        num_features=int(model.num_features),
        feature_info=info,
    )


# --------------------------------------------------------------------------------------------------
# Commands a reader needs when the weights are not on the Hub
# --------------------------------------------------------------------------------------------------


def hub_folder(entry: CatalogEntry) -> str:
    """Local hub folder that the converter and ``reproduce`` write for ``entry``."""
    return f"hub/{entry.name}"


def convert_command(entry: CatalogEntry, out_dir: str | None = None) -> str | None:
    """Command that converts the official release into a hub folder (``out_dir``, default the
    checkpoint's ``hub/<name>``), or None if no release exists."""
    if entry.upstream != catalog.OFFICIAL:
        return None
    # --install also copies the folder into the local weights directory, where
    # ``timm.create_model(<name>, pretrained=True)`` looks before the Hub.
    return (
        f"python -m selfsup_zoo.convert {entry.method} <downloaded file> "
        f"{out_dir or hub_folder(entry)} --checkpoint {entry.name} --install"
    )


def regenerate_command(entry: CatalogEntry) -> str | None:
    """Command that regenerates ``entry`` by pre-training, or None if it has no recipe."""
    if entry.recipe is None:
        return None
    return f"torchrun --nproc_per_node=<gpus> -m selfsup_zoo.training.reproduce {entry.recipe}"


# --------------------------------------------------------------------------------------------------
# Card pieces
# --------------------------------------------------------------------------------------------------


def _front_matter(meta: dict[str, Any]) -> str:
    # sort_keys=False keeps the order Hugging Face shows; safe_dump emits only plain YAML types.
    body = yaml.safe_dump(
        meta, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000
    )
    return f"---\n{body}---\n"


def _model_index(entry: CatalogEntry) -> list[dict[str, Any]]:
    # One model-index result per (protocol, split), each with its metrics and its source.
    groups: dict[tuple[str, str], list[Result]] = {}
    for result in entry.results:
        groups.setdefault((result.protocol, _metric(result)[2]), []).append(result)
    results = []
    for (protocol_text, split), rows in groups.items():
        proto = _PROTOCOLS[protocol_text]
        results.append(
            {
                "task": {"type": proto.task_type, "name": proto.task_name},
                "dataset": {"name": proto.dataset_name, "type": proto.dataset_type, "split": split},
                "metrics": [
                    {"type": _metric(r)[1], "value": r.value, "name": _metric(r)[0]} for r in rows
                ],
                "source": {"name": rows[0].source, "url": _source_url(rows[0], entry)},
            }
        )
    return [{"name": entry.name, "results": results}]


def _entry_front_matter(entry: CatalogEntry) -> dict[str, Any]:
    classifier = entry.num_classes > 0
    metrics = list(dict.fromkeys(_metric(r)[1] for r in entry.results))
    return {
        "library_name": "timm",
        "license": entry.license,
        "pipeline_tag": "image-classification" if classifier else "image-feature-extraction",
        "tags": ["image-feature-extraction", "timm", "self-supervised", entry.method]
        + (["image-classification"] if classifier else []),
        "datasets": ["imagenet-1k"],
        "metrics": metrics,
        "model-index": _model_index(entry),
    }


def _describe(entry: CatalogEntry, facts: _ModelFacts | None) -> list[str]:
    cfg = entry.pretrained_cfg()
    method = METHOD_TITLES[entry.method]
    args = ", ".join(f"{k}={v!r}" for k, v in entry.model_args.items())
    arch = f"`{entry.timm_arch}`" + (f" with `{args}`" if args else "")
    if entry.num_classes:
        what = (
            f"a {method} ImageNet-1k classifier: the self-supervised backbone pre-trained "
            f"for {entry.epochs} epochs plus the {entry.num_classes}-class linear classifier "
            "trained on top of it under the paper's linear-evaluation protocol"
        )
    else:
        what = (
            f"a {method} self-supervised backbone, pre-trained for {entry.epochs} epochs on "
            "ImageNet-1k without labels; it has no classifier and returns pooled features"
        )
    lines = [
        f"# Model card for {entry.name}",
        "",
        f"`{entry.name}` is {what}.",
        "",
        "## Model details",
        "",
        f"- **Method:** {method}, *{entry.paper_name}* ({entry.paper_ids}); official code "
        f"{entry.origin_url}",
        f"- **Architecture:** timm's own {arch} (the weights are stored in its layout, so plain "
        "timm can build it)",
    ]
    if facts is not None:
        lines.append(f"- **Parameters:** {facts.params / 1e6:.1f} M ({facts.params:,})")
        lines.append(f"- **Feature dimension:** {facts.num_features}")
    lines += [
        "- **Output:** "
        + (
            f"logits over the {entry.num_classes} ImageNet-1k classes"
            if entry.num_classes
            else "pooled features (`num_classes=0`)"
        ),
        f"- **Pre-training data:** ImageNet-1k train split, {entry.epochs} epochs, no labels",
        f"- **Input:** {cfg['input_size'][1]}x{cfg['input_size'][2]} RGB; resize with "
        f"{cfg['interpolation']} interpolation and centre-crop (crop_pct {cfg['crop_pct']}); "
        f"normalise with mean {tuple(cfg['mean'])}, std {tuple(cfg['std'])}",
        f"- **Hub repository:** [{entry.hub_repo}](https://huggingface.co/{entry.hub_repo}), "
        f"file `{entry.hub_filename}`",
        "",
    ]
    return lines


def _usage(entry: CatalogEntry, facts: _ModelFacts | None, published: bool) -> list[str]:
    out_shape = (
        f"(1, {entry.num_classes})"
        if entry.num_classes
        else (f"(1, {facts.num_features})" if facts else "(1, num_features)")
    )
    lines = ["## Usage", ""]
    if not published:
        lines += [
            "The weights are not on the Hub yet (see *Weights and integrity* below): until they "
            "are, `pretrained=True` loads them only from the local weights directory "
            "(`$SELFSUP_ZOO_WEIGHTS`, default `~/.cache/selfsup_zoo/weights`), where the "
            "converter's `--install` puts them, and the `hf-hub:` snippet fails. A hub folder "
            'you produced also loads with plain timm: `timm.create_model("local-dir:'
            f'{hub_folder(entry)}", pretrained=True)`.',
            "",
        ]
    lines += [
        "### With timm and selfsup-zoo",
        "",
        "```python",
        "import timm",
        "import torch",
        "import selfsup_zoo  # registers the CARE and SERE architectures with timm",
        "",
        f'model = timm.create_model("{entry.name}", pretrained=True).eval()',
        "config = timm.data.resolve_data_config({}, model=model)",
        "transform = timm.data.create_transform(**config)",
        "",
        "with torch.no_grad():",
        f"    output = model(transform(image).unsqueeze(0))  # image: a PIL image; {out_shape}",
        "```",
        "",
    ]
    if facts is not None and facts.feature_info:
        if entry.method == "sere":
            levels = facts.feature_info[-3:]
            where = "the last 3 transformer blocks"
        else:
            levels = facts.feature_info
            where = "the stem and the 4 stages"
        shapes = ", ".join(f"{c} ch / stride {r}" for c, r in levels)
        lines += [
            f"Feature maps ({where}: {shapes}):",
            "",
            "```python",
            f'backbone = timm.create_model("{entry.name}", pretrained=True, features_only=True)',
            "feature_maps = backbone(torch.randn(1, 3, 224, 224))  # list of NCHW tensors",
            "```",
            "",
        ]
    lines += [
        'Fine-tuning on another label set: `timm.create_model("'
        + entry.name
        + '", pretrained=True, num_classes=10)` keeps the backbone and adds a new head.',
        "",
        "### With plain timm (nothing of selfsup-zoo installed)",
        "",
        f"The Hub repository's `config.json` names timm's `{entry.timm_arch}`, so timm builds it "
        "alone:",
        "",
        "```python",
        "import timm",
        "",
        f'model = timm.create_model("hf-hub:{entry.hub_repo}", pretrained=True).eval()',
        "```",
        "",
        "### With torch.hub",
        "",
        "```python",
        "import torch",
        "",
        f'model = torch.hub.load("{GITHUB_REPO}", "{entry.arch}", tag="{entry.tag}", '
        "pretrained=True)",
        "```",
        "",
        "Other keyword arguments (`num_classes`, `features_only`, ...) are passed on to "
        "`timm.create_model`.",
        "",
    ]
    return lines


def _results(entry: CatalogEntry) -> list[str]:
    lines = [
        "## Results reported upstream",
        "",
        "Numbers published by the paper's authors, not re-measured by selfsup-zoo.",
        "",
        "| metric | value (%) | protocol | source |",
        "| --- | --- | --- | --- |",
    ]
    for r in entry.results:
        lines.append(f"| {_metric(r)[0]} | {_fmt(r)} | {r.protocol} | {r.source} |")
    lines.append("")
    if entry.num_classes:
        lines += [
            "These are the accuracies of this very classifier (backbone + linear head) under the "
            "protocol above.",
            "",
        ]
    duplicates = _duplicate_values(entry)
    for metric, others in duplicates.items():
        lines += [
            f"The {metric} value is published identically for {', '.join(others)}; it may be a "
            "copy error upstream and is quoted as published.",
            "",
        ]
    return lines


def _duplicate_values(entry: CatalogEntry) -> dict[str, list[str]]:
    # Same backbone, same metric, same value at a different schedule: worth flagging to readers.
    found: dict[str, list[str]] = {}
    for other in catalog.CATALOG.values():
        if other.arch != entry.arch or other.epochs == entry.epochs:
            continue
        mine = {(r.metric, r.protocol): r.value for r in entry.results}
        for r in other.results:
            if mine.get((r.metric, r.protocol)) == r.value:
                found.setdefault(_metric(r)[0], []).append(f"`{other.name}`")
    return found


def _converter_summary(entry: CatalogEntry) -> str:
    if entry.method == "care" and entry.num_classes:
        return (
            "The converter takes the encoder of the official linear-evaluation model (strips the "
            "DDP `module.encoder.` prefix, drops the unused projection `encoder.fc`) and folds the "
            "classifier's Linear(2048, 1000) followed by BatchNorm1d(1000) into timm's single "
            "`fc` layer (the BatchNorm uses its running statistics at test time, so the fold is "
            "exact up to float rounding)."
        )
    if entry.method == "care":
        return (
            "The converter keeps the **student** (online) encoder of the pre-training checkpoint, "
            "the one the official linear evaluation loads; it strips `module.student_encoder.`, "
            "drops the transformer stream, the projector/predictor heads and the teacher, and "
            "checks that exactly timm's ResNet keys remain (key renames only: outputs are "
            "bit-identical to the official encoder)."
        )
    return (
        "The converter picks the **teacher** state dict when the file holds one (else the "
        "student), strips `module.`/`backbone.`, drops `masked_embed`, the SERE relation heads "
        "and the iBOT projection head, and checks that exactly timm's VisionTransformer keys "
        "remain (same names and shapes; outputs match the official backbone at 224 px)."
    )


def _provenance(entry: CatalogEntry, provenance: Mapping[str, Any] | None) -> list[str]:
    lines = ["## Provenance", ""]
    if entry.upstream == catalog.OFFICIAL:
        lines += [
            f"- **Upstream:** official release. {entry.upstream_detail}",
            f"- **Conversion:** {_converter_summary(entry)}",
        ]
    else:
        lines += [
            f"- **Upstream:** not released. {entry.upstream_detail}",
            f"- **Regeneration:** pre-trained by selfsup-zoo with the recipe `{entry.recipe}` "
            f"(`selfsup_zoo/training/recipes/{entry.recipe}.toml`), written from the official "
            "code; the reported numbers above are the paper's, not this run's.",
        ]
    if provenance:
        lines += ["", "This file was produced by:", "", *_provenance_table(provenance)]
    elif entry.upstream != catalog.OFFICIAL:
        lines.append(
            "- **Run record:** the commit, world size and wall time of the regenerating run are "
            "written into the card published with the weights."
        )
    lines.append("")
    return lines


def _provenance_table(provenance: Mapping[str, Any]) -> list[str]:
    lines = ["| field | value |", "| --- | --- |"]
    for key, value in provenance.items():
        text = str(value).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {key} | `{text}` |")
    return lines


def _weights(entry: CatalogEntry, sha256: str | None) -> list[str]:
    lines = ["## Weights and integrity", ""]
    if sha256 is not None:
        lines += [
            f"`{entry.hub_filename}` (safetensors, timm layout) has sha256:",
            "",
            f"```\n{sha256}\n```",
            "",
            "selfsup-zoo checks this hash after every download.",
            "",
        ]
        return lines
    lines += [
        f"**The weights are not published yet**: `{entry.hub_repo}` does not hold them, so no "
        "hash can be given. Produce the hub folder yourself:",
        "",
    ]
    convert = convert_command(entry)
    regenerate = regenerate_command(entry)
    if convert:
        lines += [
            "- convert the official release (download it from the link under *Provenance*):",
            "",
            f"  ```bash\n  {convert}\n  ```",
            "",
        ]
    if regenerate:
        lines += [
            f"- {'or ' if convert else ''}regenerate it by pre-training (the recipe assumes "
            "the official 1024-image global batch):",
            "",
            f"  ```bash\n  {regenerate}\n  ```",
            "",
        ]
    if not convert and not regenerate:
        lines += [f"- {entry.regenerate_note}", ""]
    elif entry.regenerate_note:
        lines += [f"There is no pre-training recipe for it. {entry.regenerate_note}", ""]
    return lines


def _license(entry: CatalogEntry) -> list[str]:
    lines = ["## Licence", ""]
    if entry.method == "sere":
        lines += [
            "The SERE weights are for **non-commercial use only**. The upstream repository "
            "(MCG-NKU/SERE) states its terms twice, and the two statements differ:",
            "",
            "- its `LICENSE` file holds the full text of the Creative Commons "
            "Attribution-NonCommercial 4.0 International licence (**CC BY-NC 4.0**), followed by "
            "a note that commercial use of the model and software needs the authors' permission;",
            "- its README says the work is under Creative Commons "
            "Attribution-NonCommercial-ShareAlike 4.0 (**CC BY-NC-SA 4.0**), for non-commercial "
            "use only, and that commercial use needs formal permission.",
            "",
            f"This card applies the stricter reading, `{entry.license}` (CC BY-NC-SA 4.0), which "
            "satisfies both. selfsup-zoo's own code is Apache-2.0; that does not change the terms "
            "of these weights.",
            "",
        ]
    else:
        lines += [
            f"`{entry.license}`. {entry.license_note} selfsup-zoo's own code is Apache-2.0.",
            "",
        ]
    return lines


def _notes(entry: CatalogEntry) -> list[str]:
    notes: list[str] = []
    if entry.method == "care":
        notes.append(
            "Not to be confused with the unrelated *CARE Transformer* (CVPR 2025, "
            "`YuanZ1995/CARE-Transformer`), an efficient vision transformer; this model is the "
            "self-supervised CARE of Ge et al., NeurIPS 2021."
        )
    if entry.timm_arch == "wide_resnet50_2":
        notes.append(
            "The paper's \"ResNet-50 (2x)\" is mapped to timm's `wide_resnet50_2`: the official "
            "code's `width=2` doubles only the bottleneck width (stem and stage outputs unchanged, "
            "2048-d features), which is exactly `wide_resnet50_2`, not SimCLR's ResNet-50 (2x). "
            "This is inferred from the official code's width semantics; no width-2 checkpoint "
            "was released to confirm it."
        )
    if entry.method == "care" and entry.timm_arch != "resnet50":
        notes.append(
            "The official code only ever builds ResNet-50; how the paper trained the other "
            "backbones (batch size, learning rate) is not recorded upstream. The settings used "
            f"here are those of the recipe `{entry.recipe}`."
        )
    if entry.num_classes:
        notes.append(
            "The official classifier is Linear(2048, 1000) followed by BatchNorm1d(1000); here it "
            "is folded into timm's single `fc` layer, so logits match the official model in eval "
            "mode. Pass `num_classes=0` to get the backbone's pooled features."
        )
    if entry.method == "sere":
        notes.append(
            "Which pooling the fine-tuning results used is not stated upstream (the MAE "
            "fine-tuning code defaults to averaging patch tokens with a new `fc_norm`). This "
            "model uses timm's `global_pool='token'` (the class token), the self-supervised "
            "model's natural output; set `global_pool='avg'` to average the patch tokens."
        )
        notes.append(
            "Positional embeddings are resampled by timm for other input sizes, which differs "
            "slightly from the official interpolation; at 224 px the outputs match."
        )
    if not notes:
        return []
    return ["## Notes", "", *[f"- {n}" for n in notes], ""]


_BIBTEX = {
    "care": """@inproceedings{ge2021care,
  title         = {Revitalizing {CNN} Attention via Transformers in Self-Supervised Visual Representation Learning},
  author        = {Ge, Chongjian and Liang, Youwei and Song, Yibing and Jiao, Jianbo and Wang, Jue and Luo, Ping},
  booktitle     = {Advances in Neural Information Processing Systems (NeurIPS)},
  year          = {2021},
  eprint        = {2110.05340},
  archivePrefix = {arXiv}
}""",
    "sere": """@article{li2023sere,
  title         = {{SERE}: Exploring Feature Self-relation for Self-supervised Transformers},
  author        = {Li, Zhong-Yu and Gao, Shanghua and Cheng, Ming-Ming},
  journal       = {IEEE Transactions on Pattern Analysis and Machine Intelligence},
  volume        = {45},
  number        = {12},
  year          = {2023},
  doi           = {10.1109/TPAMI.2023.3309979},
  eprint        = {2206.05184},
  archivePrefix = {arXiv}
}""",
}


def _citation(method: str) -> list[str]:
    return ["## Citation", "", "```bibtex", _BIBTEX[method], "```", ""]


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def render_model_card(
    entry: CatalogEntry | None,
    *,
    sha256: str | None,
    provenance: dict | None = None,
    architecture: str | None = None,
    model_args: dict | None = None,
    num_classes: int | None = None,
) -> str:
    """Render the Hugging Face model card (``README.md``) of one checkpoint.

    Args:
        entry: the catalog checkpoint; None for weights that are not in the catalog (smoke and test
            runs of the training code), described from ``architecture``/``model_args``.
        sha256: hex digest of the weights file the card accompanies; None when no weights are
            published, in which case the card says so and gives the commands that produce them.
        provenance: for weights produced here, how (recipe, commit, world size, wall time, ...);
            rendered as a table in insertion order.
        architecture: timm architecture of the weights; needed when ``entry`` is None.
        model_args: timm kwargs of ``architecture`` (only with ``entry`` None).
        num_classes: classifier size of the weights (only with ``entry`` None; None = timm's
            default or ``model_args``'), so that the parameter count is the weights' own.
    """
    if entry is None:
        if not architecture:
            raise ValueError("render_model_card needs `architecture` when `entry` is None")
        return _render_generic_card(architecture, model_args or {}, num_classes, sha256, provenance)
    facts = _model_facts(entry.timm_arch, entry.model_args, entry.num_classes)
    published = sha256 is not None
    parts = [
        _front_matter(_entry_front_matter(entry)),
        *_describe(entry, facts),
        *_usage(entry, facts, published),
        *_results(entry),
        *_provenance(entry, provenance),
        *_weights(entry, sha256),
        *_license(entry),
        *_notes(entry),
        *_citation(entry.method),
    ]
    return "\n".join(parts).rstrip("\n") + "\n"


def _render_generic_card(
    architecture: str,
    model_args: Mapping[str, Any],
    num_classes: int | None,
    sha256: str | None,
    provenance: Mapping[str, Any] | None,
) -> str:
    method = str((provenance or {}).get("method", "")).lower()
    facts = _model_facts(architecture, model_args, num_classes)
    meta = {
        "library_name": "timm",
        # Weights of a local run carry no licence of their own; "other" makes that explicit.
        "license": "other",
        "tags": ["image-feature-extraction", "timm", "self-supervised"]
        + ([method] if method in METHOD_TITLES else []),
    }
    args = ", ".join(f"{k}={v!r}" for k, v in model_args.items())
    lines = [
        _front_matter(meta),
        f"# Model card for a {architecture} trained with selfsup-zoo",
        "",
        "These weights come from a run of selfsup-zoo's training code that is **not** a catalog "
        "checkpoint (a smoke or test run): they are not the paper's model and no result is "
        "claimed for them.",
        "",
        "## Model details",
        "",
        f"- **Architecture:** timm's `{architecture}`" + (f" with `{args}`" if args else ""),
    ]
    if facts is not None:
        lines += [
            f"- **Parameters:** {facts.params / 1e6:.1f} M ({facts.params:,})",
            f"- **Feature dimension:** {facts.num_features}",
        ]
    lines += [
        "- **Licence:** none determined (`other`); choose one before sharing these weights.",
        "",
        "## Usage",
        "",
        "```python",
        "import timm",
        "",
        'model = timm.create_model("local-dir:<this folder>", pretrained=True).eval()',
        "```",
        "",
        "## Provenance",
        "",
    ]
    lines += _provenance_table(provenance) if provenance else ["No provenance was recorded."]
    lines += ["", "## Weights and integrity", ""]
    lines.append(
        f"sha256 of the weights file: `{sha256}`"
        if sha256
        else "No hash was recorded for these weights."
    )
    return "\n".join(lines).rstrip("\n") + "\n"


def result_summary(entry: CatalogEntry) -> str:
    """The reported results in one line, e.g. ``top-1 72.02, top-5 90.02 (IN-1k linear)``."""
    groups: dict[str, list[Result]] = {}
    for r in entry.results:
        groups.setdefault(r.protocol, []).append(r)
    cells = []
    for protocol_text, rows in groups.items():
        values = ", ".join(f"{_metric(r)[0]} {_fmt(r)}" for r in rows)
        cells.append(f"{values} ({_PROTOCOLS[protocol_text].short})")
    return "; ".join(cells)


def render_zoo_table() -> str:
    """The README's zoo section (between the markers): one row per catalog checkpoint."""
    lines = [
        TABLE_START,
        "## Model zoo",
        "",
        f"Generated from `selfsup_zoo/catalog.py` by `{REGENERATE_COMMAND}`; do not edit by hand. "
        "Results are the ones the papers' authors report, with the protocol in brackets "
        "(*IN-1k linear*: linear evaluation of the frozen backbone; *IN-1k fine-tune*: full "
        "fine-tuning). Each name links to its model card.",
        "",
        "| checkpoint | backbone (timm) | epochs | reported result | upstream | published "
        "| licence |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for entry in catalog.CATALOG.values():
        upstream = "official release" if entry.upstream == catalog.OFFICIAL else "not released"
        published = (
            f"[yes](https://huggingface.co/{entry.hub_repo})" if entry.published else "not yet"
        )
        lines.append(
            f"| [{entry.name}]({CARDS_DIR}/{entry.name}.md) | `{entry.timm_arch}` | "
            f"{entry.epochs} | {result_summary(entry)} | {upstream} | {published} | "
            f"{entry.license} |"
        )
    lines += ["", TABLE_END]
    return "\n".join(lines)


def replace_zoo_table(readme: str) -> str:
    """``readme`` with its zoo section regenerated (appended at the end if it has no markers)."""
    table = render_zoo_table()
    start, end = readme.find(TABLE_START), readme.find(TABLE_END)
    if start == -1 and end == -1:
        return readme.rstrip("\n") + "\n\n" + table + "\n"
    if start == -1 or end == -1 or end < start:
        raise ValueError(f"README has unbalanced zoo-table markers ({TABLE_START} ... {TABLE_END})")
    return readme[:start] + table + readme[end + len(TABLE_END) :]


def expected_files(root: Path) -> dict[Path, str]:
    """Every generated file under the repository ``root`` and the content it must have."""
    files = {
        root / CARDS_DIR / f"{entry.name}.md": render_model_card(entry, sha256=entry.sha256)
        for entry in catalog.CATALOG.values()
    }
    readme = root / "README.md"
    files[readme] = replace_zoo_table(readme.read_text(encoding="utf-8"))
    return files


def drifted(root: Path) -> list[str]:
    """Generated files under ``root`` that differ from the catalog, as messages (empty: in sync)."""
    problems = []
    expected = expected_files(root)
    for path, text in expected.items():
        rel = path.relative_to(root)
        if not path.exists():
            problems.append(f"{rel}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{rel}: differs from the catalog")
    for path in sorted((root / CARDS_DIR).glob("*.md")):
        if path not in expected:
            problems.append(f"{path.relative_to(root)}: no such checkpoint in the catalog")
    return problems


def write(root: Path) -> list[Path]:
    """Write the generated files under ``root``; return those that changed."""
    changed = []
    expected = expected_files(root)
    (root / CARDS_DIR).mkdir(exist_ok=True)
    for path, text in expected.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    for path in sorted((root / CARDS_DIR).glob("*.md")):
        if path not in expected:  # the folder is fully generated: a stale card must go
            path.unlink()
            changed.append(path)
    return changed


def _default_root() -> Path:
    return Path(__file__).resolve().parent.parent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m selfsup_zoo.cards",
        description="Regenerate model_cards/ and the README zoo table from the catalog.",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 and list the files that drifted"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=_default_root(),
        help="repository root holding README.md (default: this checkout)",
    )
    args = parser.parse_args(argv)
    root: Path = args.root
    if not (root / "README.md").is_file():
        print(f"error: {root} has no README.md; pass --root <repository checkout>", file=sys.stderr)
        return 2
    if args.check:
        problems = drifted(root)
        for problem in problems:
            print(problem)
        if problems:
            print(
                f"{len(problems)} generated file(s) out of date: run `{REGENERATE_COMMAND}`",
                file=sys.stderr,
            )
            return 1
        print(
            f"model cards and README zoo table match the catalog ({len(catalog.CATALOG)} "
            "checkpoints)"
        )
        return 0
    changed = write(root)
    for path in changed:
        print(
            f"wrote {path.relative_to(root)}"
            if path.exists()
            else f"removed {path.relative_to(root)}"
        )
    print(f"{len(changed)} file(s) changed, {len(catalog.CATALOG)} checkpoints in the catalog")
    return 0


if __name__ == "__main__":
    sys.exit(main())
