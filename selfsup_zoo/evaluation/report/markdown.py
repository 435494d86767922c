"""``report.md``: the report for a person (verdict, results table, periodic k-NN, provenance)."""

from __future__ import annotations

from collections.abc import Sequence

from .schema import Check, Report

__all__ = ["render_markdown", "results_table"]

_PROTOCOL_TITLES = {"knn": "k-NN", "linear": "linear probe", "finetune": "fine-tuning"}


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _tolerance(check: Check) -> str:
    if check.tolerance is None:
        return "-"
    if check.reference_kind == "random-init":
        return f">= +{check.tolerance:g} over random init"
    return f"within {check.tolerance:g}"


def results_table(checks: Sequence[Check]) -> list[str]:
    """The measured-vs-reference table (Markdown lines), one row per check."""
    lines = [
        "| protocol | metric | measured | reference | difference | tolerance | status | source |",
        "|---|---|---:|---:|---:|---|---|---|",
    ]
    for c in checks:
        ref = _num(c.reference) + (f" ({c.reference_kind})" if c.reference is not None else "")
        lines.append(
            f"| {_PROTOCOL_TITLES.get(c.protocol, c.protocol)} | {c.metric} | {_num(c.measured)} "
            f"| {ref} | {_num(c.difference, signed=True)} | {_tolerance(c)} | **{c.status}** "
            f"| {c.source or '-'} |"
        )
    return lines


def _measurements(report: Report) -> list[str]:
    lines = ["| evaluation | row | top-1 | top-5 | val images |", "|---|---|---:|---:|---:|"]
    for m in report.measurements:
        images = m.data.get("val", {}).get("images", "-")
        lines.append(f"| {m.label} | {m.row} | {_num(m.top1)} | {_num(m.top5)} | {images} |")
    return lines


def _periodic(report: Report) -> list[str]:
    if not report.periodic_knn:
        return ["No k-NN ran during pre-training (`evaluations.jsonl` is absent)."]
    lines = ["| epoch | step | top-1 | top-5 | k |", "|---:|---:|---:|---:|---:|"]
    for r in report.periodic_knn:
        lines.append(
            f"| {r.get('epoch')} | {r.get('step')} | {_num(r.get('knn_top1'))} "
            f"| {_num(r.get('knn_top5'))} | {r.get('knn_k', '-')} |"
        )
    return lines


def _provenance(report: Report) -> list[str]:
    p = report.provenance
    rows = [
        ("recipe", f"`{p.recipe}` (sha256 `{p.recipe_sha256}`)"),
        ("catalog checkpoint", f"`{p.checkpoint}`" if p.checkpoint else "none (not a catalog run)"),
        ("method", p.method),
        ("code commit", f"`{p.git_commit}`" if p.git_commit else "unknown"),
        ("world size", str(p.world_size)),
        ("devices", p.devices or "unknown"),
        ("steps", f"{p.steps} / {p.total_steps}"),
        ("wall time", f"{p.wall_time_s:.1f} s"),
        ("device-hours", f"{p.device_hours:.4f}"),
        ("training data", f"`{p.data_root}` ({p.data_images} images)" if p.data_root else "-"),
        ("data fingerprint", f"`{p.data_fingerprint}`" if p.data_fingerprint else "unknown"),
        ("weights sha256", f"`{p.weights_sha256}`"),
        ("versions", ", ".join(f"{k} {v}" for k, v in p.versions.items()) or "unknown"),
    ]
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def render_markdown(report: Report) -> str:
    """The text of ``report.md``.

    Args:
        report: the collected report.

    Returns:
        Markdown with the verdict, the checks, every evaluation, the periodic k-NN, the
        provenance and the plots (linked relative to the run folder).
    """
    p = report.provenance
    lines = [
        f"# Reproduction report: {p.recipe}",
        "",
        f"**Verdict: {report.verdict}** "
        '(tolerances and margins: docs/evaluation.md, "Reproduction report")',
        "",
        "## Measured vs reference",
        "",
        *(results_table(report.checks) if report.checks else ["No final evaluation was asked."]),
        "",
        "## Final evaluations",
        "",
        *(_measurements(report) if report.measurements else ["None found under `eval/`."]),
        "",
        "## k-NN during pre-training",
        "",
        *_periodic(report),
        "",
        "## Provenance",
        "",
        *_provenance(report),
        "",
    ]
    if report.plots:
        lines += ["## Plots", ""]
        lines += [f"![{plot}]({plot})" for plot in report.plots]
        lines.append("")
    lines.append(f"Built {report.created}.")
    return "\n".join(lines) + "\n"
