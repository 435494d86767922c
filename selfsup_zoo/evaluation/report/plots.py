"""The report's PNG plots: loss terms, schedules (lr, weight decay, EMA momentum), periodic k-NN."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfsup_zoo._io import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["PLOTS_DIR", "loss_terms", "write_plots"]

PLOTS_DIR = "plots"

#: log.jsonl fields that are not loss terms.
_NOT_LOSSES = frozenset(
    {"step", "epoch", "lr", "wd", "momentum", "images_per_s", "num_replaced", "loss_scale"}
)
#: (log.jsonl field, panel title, y label) of the schedules figure.
_SCHEDULES = (
    ("lr", "Learning rate", "learning rate"),
    ("wd", "Weight decay", "weight decay"),
    ("momentum", "EMA (teacher) momentum", "momentum"),
)


def loss_terms(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The loss fields of ``log.jsonl`` rows (``loss`` first), in the order they appear."""
    names = dict.fromkeys(
        k for r in rows for k, v in r.items() if k not in _NOT_LOSSES and isinstance(v, int | float)
    )
    return sorted(names, key=lambda k: k != "loss")


def _new_figure(panels: int, title: str) -> tuple[Figure, list[Any]]:
    # Lazy: matplotlib is in the train/test extras only, and pyplot is never used (no global
    # state, no display): a Figure with the Agg canvas.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    size = (4.2 * cols, 3.2 * rows) if panels > 1 else (6.4, 4.2)
    fig = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(panels)]
    fig.suptitle(title)
    return fig, axes


def _save(fig: Figure, path: Path) -> None:
    # Metadata without the software version, so rebuilding the plots gives the same bytes.
    atomic_write(path, lambda f: fig.savefig(f, format="png", metadata={"Software": None}))


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
    return [float(s) for s, _ in points], [float(v) for _, v in points]


def _plot_losses(rows: Sequence[dict[str, Any]], recipe: str, path: Path) -> bool:
    terms = loss_terms(rows)
    if not terms:
        return False
    fig, axes = _new_figure(len(terms), f"{recipe}: loss terms over training")
    for ax, term in zip(axes, terms, strict=True):
        steps, values = _series(rows, term)
        ax.plot(steps, values, marker="." if len(steps) < 30 else None, color="tab:blue")
        ax.set_title(term)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def _plot_schedules(rows: Sequence[dict[str, Any]], recipe: str, path: Path) -> bool:
    present = [s for s in _SCHEDULES if _series(rows, s[0])[0]]
    if not present:
        return False
    fig, axes = _new_figure(len(present), f"{recipe}: schedules over training")
    for ax, (key, title, ylabel) in zip(axes, present, strict=True):
        steps, values = _series(rows, key)
        ax.plot(steps, values, color="tab:green")
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def _plot_knn(
    periodic: Sequence[dict[str, Any]], twin_top1: float | None, recipe: str, path: Path
) -> bool:
    points = [r for r in periodic if isinstance(r.get("knn_top1"), int | float)]
    if not points:
        return False
    fig, (ax,) = _new_figure(1, f"{recipe}: k-NN during pre-training")
    epochs = [int(r["epoch"]) for r in points]
    k = points[-1].get("knn_k")
    ax.plot(epochs, [r["knn_top1"] for r in points], marker="o", label="top-1")
    if all(isinstance(r.get("knn_top5"), int | float) for r in points):
        ax.plot(epochs, [r["knn_top5"] for r in points], marker="s", alpha=0.6, label="top-5")
    if twin_top1 is not None:
        ax.axhline(twin_top1, linestyle="--", color="gray", label="random init, top-1 (final)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"weighted k-NN (k={k})" if k else "weighted k-NN")
    ax.set_xticks(epochs if len(epochs) <= 12 else epochs[:: math.ceil(len(epochs) / 12)])
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    _save(fig, path)
    return True


def write_plots(
    run_dir: Path,
    rows: Sequence[dict[str, Any]],
    periodic: Sequence[dict[str, Any]],
    twin_knn_top1: float | None,
    recipe: str,
) -> list[str]:
    """Write ``<run>/plots/{losses,schedules,knn}.png`` (each only when it has data).

    Args:
        run_dir: the run folder.
        rows: ``log.jsonl`` rows (step, lr, wd, momentum, loss terms).
        periodic: ``evaluations.jsonl`` records (epoch, knn_top1, knn_top5, knn_k).
        twin_knn_top1: final k-NN top-1 of the random-init twin (a dashed line), if measured.
        recipe: the recipe name, for the titles.

    Returns:
        The files written, relative to ``run_dir`` (e.g. ``plots/losses.png``).
    """
    folder = run_dir / PLOTS_DIR
    folder.mkdir(exist_ok=True)
    written = []
    for name, made in (
        ("losses.png", lambda p: _plot_losses(rows, recipe, p)),
        ("schedules.png", lambda p: _plot_schedules(rows, recipe, p)),
        ("knn.png", lambda p: _plot_knn(periodic, twin_knn_top1, recipe, p)),
    ):
        path = folder / name
        if made(path):
            written.append(f"{PLOTS_DIR}/{name}")
        else:
            path.unlink(missing_ok=True)  # a stale plot of an earlier build
    return written
