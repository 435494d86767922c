"""Weighted k-NN classification of L2-normalised features: one chunked similarity pass for all k.

The DINO/iBOT protocol: each test image votes with its ``k`` most cosine-similar training images,
each vote weighted by ``exp(sim / T)`` (T = 0.07), and top-1/top-5 are read off the vote totals.
Here the ``max(k)`` nearest neighbours are found once and every smaller ``k`` uses a prefix of that
sorted list, so ``k`` in {10, 20, 100, 200} costs one similarity pass, not four.

The test set is cut into chunks whose similarity block fits a memory budget (DINO cuts it into a
fixed 100 chunks, which fails below 100 test images and does not bound memory). Ties are broken
deterministically: among equal similarities the lower training index ranks first, and among equal
vote totals the lower class index, so results do not depend on the chunking or on the kernel that
``topk`` happens to use.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_KS",
    "DEFAULT_MEMORY_BUDGET_GB",
    "DEFAULT_TEMPERATURE",
    "few_shot_indices",
    "knn_accuracy",
    "knn_votes",
    "rows_per_chunk",
    "topk_accuracy",
    "topk_neighbours",
]

#: The k values of DINO's ``eval_knn.py`` (``--nb_knn 10 20 100 200``).
DEFAULT_KS: tuple[int, ...] = (10, 20, 100, 200)
#: DINO's ``--temperature`` default.
DEFAULT_TEMPERATURE = 0.07
#: Memory (GB) for the bank and one chunk's similarity block. 16 GB holds a 1.28M x 2048 float32
#: bank (10.5 GB) plus ~5.5 GB of blocks, so the default fits a 24 GB GPU with room for the model.
DEFAULT_MEMORY_BUDGET_GB = 16.0
# Bytes per similarity entry of a chunk: the float32 block itself, and topk's and the tie check's
# temporaries (a float32 copy and a bool mask, rounded up).
_BYTES_PER_SIMILARITY = 12


def rows_per_chunk(num_train: int, dim: int, memory_budget_gb: float) -> int:
    """How many test rows one similarity block may hold within ``memory_budget_gb``.

    Args:
        num_train: bank size N.
        dim: feature dimension D.
        memory_budget_gb: budget for the float32 bank [N, D] plus one block [rows, N].

    Returns:
        rows >= 1.

    Raises:
        ValueError: the bank alone does not fit the budget.
    """
    budget = memory_budget_gb * 1e9
    bank = 4.0 * num_train * dim
    if bank >= budget:
        raise ValueError(
            f"the feature bank ({num_train} x {dim} float32, {bank / 1e9:.1f} GB) does not fit "
            f"--memory-budget-gb {memory_budget_gb:g}; raise the budget (the bank plus at least "
            "one similarity row must fit) or run the search on a device with more memory"
        )
    return max(1, int((budget - bank) // (_BYTES_PER_SIMILARITY * num_train)))


def _order_ties_by_index(
    sim: torch.Tensor, top_sim: torch.Tensor, top_idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Make ``topk``'s answer the one of a stable sort by (-similarity, index).

    Args:
        sim: the full block [m, N]; top_sim, top_idx: ``sim.topk(k)`` [m, k].

    Returns:
        (similarities, indices) [m, k], descending, ties in ascending index order.
    """
    # Within the candidates: ascending index, then a stable descending sort by similarity.
    by_index = top_idx.argsort(dim=1)
    top_idx = top_idx.gather(1, by_index)
    top_sim, perm = top_sim.gather(1, by_index).sort(dim=1, descending=True, stable=True)
    top_idx = top_idx.gather(1, perm)
    # At the k-th place, topk may have kept any of several equal similarities; the lowest indices
    # must be kept. Rows with such a boundary tie (rare outside synthetic data) are redone exactly.
    kth = top_sim[:, -1:]
    tied_inside = (top_sim == kth).sum(dim=1)
    tied_total = (sim == kth).sum(dim=1)
    for row in (tied_total > tied_inside).nonzero().flatten().tolist():
        count = int(tied_inside[row])
        lowest = (sim[row] == kth[row]).nonzero().flatten()[:count]
        top_idx[row, -count:] = lowest
    return top_sim, top_idx


@torch.no_grad()
def topk_neighbours(
    train_feats: torch.Tensor,
    test_feats: torch.Tensor,
    k: int,
    *,
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
    chunk_rows: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most similar training rows of every test row, in one chunked pass.

    Args:
        train_feats: bank [N, D] (L2-normalised for cosine similarity).
        test_feats: queries [M, D], any M >= 0.
        k: neighbours per query; clipped to N.
        memory_budget_gb: sizes the chunks (:func:`rows_per_chunk`) unless ``chunk_rows`` is given.
        chunk_rows: test rows per similarity block (overrides the budget).
        device: where the search runs (default: the bank's device); results come back on the CPU.
        progress: show a progress bar over chunks.

    Returns:
        (similarities float32 [M, k'], training indices int64 [M, k']) with k' = min(k, N), sorted
        by descending similarity, equal similarities in ascending index order.
    """
    num_train, dim = train_feats.shape
    k = min(int(k), num_train)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    device = torch.device(device) if device is not None else train_feats.device
    bank = train_feats.to(device=device, dtype=torch.float32)
    rows = chunk_rows or rows_per_chunk(num_train, dim, memory_budget_gb)
    num_test = test_feats.shape[0]
    out_sim = torch.empty(num_test, k, dtype=torch.float32)
    out_idx = torch.empty(num_test, k, dtype=torch.int64)
    starts = range(0, num_test, rows)
    logger.info(
        "k-NN search: %d queries, %d training features, %d per chunk", num_test, num_train, rows
    )
    for start in _progress(starts, progress, "k-NN search"):
        queries = test_feats[start : start + rows].to(device=device, dtype=torch.float32)
        sim = queries @ bank.T  # [m, N]
        top_sim, top_idx = sim.topk(k, dim=1)
        top_sim, top_idx = _order_ties_by_index(sim, top_sim, top_idx)
        out_sim[start : start + rows] = top_sim.cpu()
        out_idx[start : start + rows] = top_idx.cpu()
    return out_sim, out_idx


def knn_votes(
    top_sim: torch.Tensor,
    top_idx: torch.Tensor,
    train_labels: torch.Tensor,
    *,
    k: int,
    temperature: float = DEFAULT_TEMPERATURE,
    num_classes: int,
) -> torch.Tensor:
    """Weighted vote totals of the first ``k`` neighbours.

    Args:
        top_sim, top_idx: [M, K] from :func:`topk_neighbours` with K >= k (a prefix is used).
        train_labels: int64 [N].
        k: neighbours that vote.
        temperature: T of the weights ``exp(sim / T)``.
        num_classes: C.

    Returns:
        scores float32 [M, C].
    """
    weights = (top_sim[:, :k] / temperature).exp()  # [M, k]
    neighbour_labels = train_labels[top_idx[:, :k]]  # [M, k]
    votes = torch.zeros(top_sim.shape[0], num_classes, dtype=weights.dtype)
    return votes.scatter_add_(1, neighbour_labels, weights)


def topk_accuracy(
    scores: torch.Tensor, labels: torch.Tensor, topk: Sequence[int] = (1, 5)
) -> dict[int, float]:
    """Accuracy (%) of the ``t`` best-scored classes for each ``t`` in ``topk``.

    Args:
        scores: [M, C]; equal scores rank the lower class first.
        labels: int64 [M].
        topk: the t values (each clipped to C).

    Returns:
        {t: accuracy in percent} (NaN for M = 0).
    """
    if scores.shape[0] == 0:
        return {t: math.nan for t in topk}
    order = scores.sort(dim=1, descending=True, stable=True).indices
    hits = order[:, : max(topk)] == labels[:, None]
    return {t: 100.0 * hits[:, :t].any(dim=1).float().mean().item() for t in topk}


def knn_accuracy(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = DEFAULT_TEMPERATURE,
    num_classes: int,
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
    chunk_rows: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[int, dict[str, float]]:
    """Top-1/top-5 (%) of weighted k-NN for every k, from one similarity pass.

    Args:
        train_feats [N, D], train_labels int64 [N], test_feats [M, D], test_labels int64 [M]:
            L2-normalised features and their labels in one class numbering.
        ks: the k values; each is clipped to N (the result's ``k_used`` says so).
        temperature, num_classes, memory_budget_gb, chunk_rows, device, progress: as in
            :func:`topk_neighbours` and :func:`knn_votes`.

    Returns:
        {k: {"top1", "top5", "k_used"}} in the order of ``ks``.
    """
    top_sim, top_idx = topk_neighbours(
        train_feats,
        test_feats,
        max(ks),
        memory_budget_gb=memory_budget_gb,
        chunk_rows=chunk_rows,
        device=device,
        progress=progress,
    )
    results: dict[int, dict[str, float]] = {}
    for k in ks:
        k_used = min(int(k), train_feats.shape[0])
        scores = knn_votes(
            top_sim,
            top_idx,
            train_labels,
            k=k_used,
            temperature=temperature,
            num_classes=num_classes,
        )
        acc = topk_accuracy(scores, test_labels, (1, min(5, num_classes)))
        results[int(k)] = {
            "top1": acc[1],
            "top5": acc[min(5, num_classes)],
            "k_used": float(k_used),
        }
    return results


def few_shot_indices(
    labels: torch.Tensor, shots: int, num_classes: int, generator: torch.Generator
) -> torch.Tensor:
    """``shots`` random training indices per class (one few-shot draw), sorted.

    Args:
        labels: int64 [N] training labels in [0, C).
        shots: images per class.
        num_classes: C.
        generator: the draw's seeded CPU generator.

    Returns:
        int64 [C * shots].

    Raises:
        ValueError: a class has fewer than ``shots`` images.
    """
    chosen = []
    for c in range(num_classes):
        members = (labels == c).nonzero().flatten()
        if members.numel() < shots:
            raise ValueError(
                f"class {c} has only {members.numel()} training images, fewer than --shots "
                f"{shots}; lower --shots or add images"
            )
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:shots]])
    return torch.cat(chosen).sort().values


def _progress(items: range, enabled: bool, desc: str) -> Iterable[int]:
    if not enabled or len(items) < 2:
        return items
    try:  # tqdm is an optional dependency (the train/test extras): lazy import
        from tqdm.auto import tqdm
    except ImportError:
        return items
    bar: Iterable[int] = tqdm(items, desc=desc, unit="chunk", dynamic_ncols=True, leave=False)
    return bar
