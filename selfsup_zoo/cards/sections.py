"""The sections of a catalog checkpoint's model card, each as a list of Markdown lines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from selfsup_zoo import catalog
from selfsup_zoo.catalog import CatalogEntry, convert_command, hub_folder, regenerate_command

from .facts import ModelFacts
from .vocabulary import GITHUB_REPO, METHOD_TITLES, format_value, metric_of


def describe(entry: CatalogEntry, facts: ModelFacts | None) -> list[str]:
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


def usage(entry: CatalogEntry, facts: ModelFacts | None, published: bool) -> list[str]:
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


def results(entry: CatalogEntry) -> list[str]:
    lines = [
        "## Results reported upstream",
        "",
        "Numbers published by the paper's authors, not re-measured by selfsup-zoo.",
        "",
        "| metric | value (%) | protocol | source |",
        "| --- | --- | --- | --- |",
    ]
    for r in entry.results:
        lines.append(f"| {metric_of(r)[0]} | {format_value(r)} | {r.protocol} | {r.source} |")
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
                found.setdefault(metric_of(r)[0], []).append(f"`{other.name}`")
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


def provenance_section(entry: CatalogEntry, provenance: Mapping[str, Any] | None) -> list[str]:
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
        lines += ["", "This file was produced by:", "", *provenance_table(provenance)]
    elif entry.upstream != catalog.OFFICIAL:
        lines.append(
            "- **Run record:** the commit, world size and wall time of the regenerating run are "
            "written into the card published with the weights."
        )
    lines.append("")
    return lines


def provenance_table(provenance: Mapping[str, Any]) -> list[str]:
    lines = ["| field | value |", "| --- | --- |"]
    for key, value in provenance.items():
        text = str(value).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {key} | `{text}` |")
    return lines


def weights_section(entry: CatalogEntry, sha256: str | None) -> list[str]:
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


def licence_section(entry: CatalogEntry) -> list[str]:
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


def notes(entry: CatalogEntry) -> list[str]:
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


# One string per method, built from its lines (two CARE lines are longer than the code's 100).
_BIBTEX = {
    "care": "\n".join(
        [
            "@inproceedings{ge2021care,",
            "  title         = {Revitalizing {CNN} Attention via Transformers in "
            "Self-Supervised Visual Representation Learning},",
            "  author        = {Ge, Chongjian and Liang, Youwei and Song, Yibing and Jiao, "
            "Jianbo and Wang, Jue and Luo, Ping},",
            "  booktitle     = {Advances in Neural Information Processing Systems (NeurIPS)},",
            "  year          = {2021},",
            "  eprint        = {2110.05340},",
            "  archivePrefix = {arXiv}",
            "}",
        ]
    ),
    "sere": "\n".join(
        [
            "@article{li2023sere,",
            "  title         = {{SERE}: Exploring Feature Self-relation for Self-supervised "
            "Transformers},",
            "  author        = {Li, Zhong-Yu and Gao, Shanghua and Cheng, Ming-Ming},",
            "  journal       = {IEEE Transactions on Pattern Analysis and Machine Intelligence},",
            "  volume        = {45},",
            "  number        = {12},",
            "  year          = {2023},",
            "  doi           = {10.1109/TPAMI.2023.3309979},",
            "  eprint        = {2206.05184},",
            "  archivePrefix = {arXiv}",
            "}",
        ]
    ),
}


def citation(method: str) -> list[str]:
    return ["## Citation", "", "```bibtex", _BIBTEX[method], "```", ""]
