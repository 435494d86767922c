"""A Hugging Face model card (``README.md`` with YAML metadata) for a checkpoint or a run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml  # a dependency of huggingface_hub, which the package requires

from selfsup_zoo.catalog import CatalogEntry, Result

from .facts import model_facts
from .measured import MeasuredResult, measured_model_index, measured_section
from .sections import (
    citation,
    describe,
    licence_section,
    notes,
    provenance_section,
    provenance_table,
    results,
    usage,
    weights_section,
)
from .vocabulary import METHOD_TITLES, PROTOCOLS, metric_of, source_url


def _front_matter(meta: dict[str, Any]) -> str:
    # sort_keys=False keeps the order Hugging Face shows; safe_dump emits only plain YAML types.
    body = yaml.safe_dump(
        meta, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000
    )
    return f"---\n{body}---\n"


def _model_index(entry: CatalogEntry, measured: Sequence[MeasuredResult]) -> list[dict[str, Any]]:
    # One model-index result per (protocol, split), each with its metrics and its source; then
    # the results measured on the weights themselves, under the same model.
    groups: dict[tuple[str, str], list[Result]] = {}
    for result in entry.results:
        groups.setdefault((result.protocol, metric_of(result)[2]), []).append(result)
    results = []
    for (protocol_text, split), rows in groups.items():
        proto = PROTOCOLS[protocol_text]
        results.append(
            {
                "task": {"type": proto.task_type, "name": proto.task_name},
                "dataset": {"name": proto.dataset_name, "type": proto.dataset_type, "split": split},
                "metrics": [
                    {"type": metric_of(r)[1], "value": r.value, "name": metric_of(r)[0]}
                    for r in rows
                ],
                "source": {"name": rows[0].source, "url": source_url(rows[0], entry)},
            }
        )
    return [{"name": entry.name, "results": results + measured_model_index(measured)}]


def _metric_types(results: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(m["type"]) for r in results for m in r["metrics"]]


def _entry_front_matter(entry: CatalogEntry, measured: Sequence[MeasuredResult]) -> dict[str, Any]:
    classifier = entry.num_classes > 0
    model_index = _model_index(entry, measured)
    metrics = list(dict.fromkeys(_metric_types(model_index[0]["results"])))
    return {
        "library_name": "timm",
        "license": entry.license,
        "pipeline_tag": "image-classification" if classifier else "image-feature-extraction",
        "tags": ["image-feature-extraction", "timm", "self-supervised", entry.method]
        + (["image-classification"] if classifier else []),
        "datasets": ["imagenet-1k"],
        "metrics": metrics,
        "model-index": model_index,
    }


def render_model_card(
    entry: CatalogEntry | None,
    *,
    sha256: str | None,
    provenance: Mapping[str, Any] | None = None,
    architecture: str | None = None,
    model_args: Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    measured: Sequence[MeasuredResult] = (),
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
        measured: results measured on these very weights (a reproduction report): added to the
            ``model-index`` beside the paper's, and as a section of their own.

    Returns:
        The card's text: YAML front matter, then Markdown.
    """
    if entry is None:
        if not architecture:
            raise ValueError("render_model_card needs `architecture` when `entry` is None")
        return _render_generic_card(
            architecture, model_args or {}, num_classes, sha256, provenance, measured
        )
    facts = model_facts(entry.timm_arch, entry.model_args, entry.num_classes)
    published = sha256 is not None
    parts = [
        _front_matter(_entry_front_matter(entry, measured)),
        *describe(entry, facts),
        *usage(entry, facts, published),
        *results(entry),
        *(measured_section(measured) if measured else []),
        *provenance_section(entry, provenance),
        *weights_section(entry, sha256),
        *licence_section(entry),
        *notes(entry),
        *citation(entry.method),
    ]
    return "\n".join(parts).rstrip("\n") + "\n"


def _render_generic_card(
    architecture: str,
    model_args: Mapping[str, Any],
    num_classes: int | None,
    sha256: str | None,
    provenance: Mapping[str, Any] | None,
    measured: Sequence[MeasuredResult],
) -> str:
    method = str((provenance or {}).get("method", "")).lower()
    facts = model_facts(architecture, model_args, num_classes)
    meta: dict[str, Any] = {
        "library_name": "timm",
        # Weights of a local run carry no licence of their own; "other" makes that explicit.
        "license": "other",
        "tags": ["image-feature-extraction", "timm", "self-supervised"]
        + ([method] if method in METHOD_TITLES else []),
    }
    measured_index = measured_model_index(measured)
    if measured_index:
        name = str((provenance or {}).get("recipe") or architecture)
        meta["metrics"] = list(dict.fromkeys(_metric_types(measured_index)))
        meta["model-index"] = [{"name": name, "results": measured_index}]
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
        *(measured_section(measured) if measured else []),
        "## Provenance",
        "",
    ]
    lines += provenance_table(provenance) if provenance else ["No provenance was recorded."]
    lines += ["", "## Weights and integrity", ""]
    lines.append(
        f"sha256 of the weights file: `{sha256}`"
        if sha256
        else "No hash was recorded for these weights."
    )
    return "\n".join(lines).rstrip("\n") + "\n"
