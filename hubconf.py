"""torch.hub entrypoints of selfsup-zoo: one per zoo architecture, generated from the catalog.

    import torch
    model = torch.hub.load("selfsup-zoo/selfsup-zoo", "care_resnet50", tag="in1k_ep800")
    torch.hub.list("selfsup-zoo/selfsup-zoo")           # the architectures
    torch.hub.help("selfsup-zoo/selfsup-zoo", "sere_vit_small")  # tags, results, licence

Every entrypoint is ``timm.create_model("<arch>.<tag>", pretrained=pretrained, **kwargs)`` on the
architectures that importing ``selfsup_zoo`` registers with timm, so the weights, their checks and
their errors are the same as with timm directly.

torch.hub puts the repository on ``sys.path`` only while it imports this file and calls an
entrypoint, so the package is imported here, eagerly. Everything except the entrypoints is private
(``_`` prefix, modules rather than functions): ``torch.hub.list`` shows every public callable.
"""

import typing as _typing

import selfsup_zoo as _selfsup_zoo  # registers the care_* / sere_* architectures with timm
from selfsup_zoo import cards as _cards
from selfsup_zoo import catalog as _catalog

# Import names, checked by torch.hub before an entrypoint runs.
dependencies = ["torch", "timm", "huggingface_hub", "safetensors"]


def _docstring(arch: str) -> str:
    entries = _catalog.entries_for(arch)
    default = _catalog.default_entry(arch)
    method = _cards.METHOD_TITLES[default.method]
    licences = sorted({e.license for e in entries})
    lines = [
        f"{method} {arch}: timm's ``{default.timm_arch}`` with {method} self-supervised weights "
        f"(ImageNet-1k).",
        "",
        f"{default.paper_name} ({default.paper_ids}), {default.origin_url}",
        "",
        "Args:",
        "    pretrained: load the checkpoint's weights (default True). Unpublished weights load "
        "from the",
        "        local weights directory (``python -m selfsup_zoo.convert ... --install``); "
        "otherwise the",
        "        error says how to convert or regenerate them.",
        f"    tag: which checkpoint (default ``{default.tag}``), one of the tags below.",
        "    **kwargs: passed to ``timm.create_model`` (``num_classes``, ``features_only``,",
        "        ``global_pool``, ``pretrained_cfg_overlay``, ...).",
        "",
        "Tags (results reported upstream, with their protocol):",
    ]
    for entry in entries:
        upstream = "official release" if entry.upstream == _catalog.OFFICIAL else "not released"
        published = f"on the Hub ({entry.hub_repo})" if entry.published else "not published yet"
        default_mark = " (default)" if entry is default else ""
        head = " + 1000-class linear classifier" if entry.num_classes else ""
        lines += [
            f"    {entry.tag}{default_mark}: {entry.epochs} epochs{head}; "
            f"{_cards.result_summary(entry)}",
            f"        upstream: {upstream}; weights: {published}; licence: {entry.license}",
        ]
    lines += ["", f"Licence of the weights: {', '.join(licences)}."]
    lines += list(dict.fromkeys(e.license_note for e in entries))
    lines += ["", f"Returns: a timm ``{_type_name(default.method)}``."]
    return "\n".join(lines)


def _type_name(method: str) -> str:
    return "ResNet" if method == "care" else "VisionTransformer"


def _make_entrypoint(arch: str) -> _typing.Callable[..., _typing.Any]:
    def entrypoint(
        pretrained: bool = True, *, tag: str | None = None, **kwargs: _typing.Any
    ) -> _typing.Any:
        name = arch if tag is None else f"{arch}.{tag}"
        # selfsup_zoo.create_model is timm.create_model plus suggestions for mistyped tags.
        return _selfsup_zoo.create_model(name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = arch
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = _docstring(arch)
    return entrypoint


for _arch in _catalog.architectures():
    globals()[_arch] = _make_entrypoint(_arch)
del _arch
