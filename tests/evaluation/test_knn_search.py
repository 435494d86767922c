"""The k-NN search against a brute-force reference written here: ties, small test sets, several k
from one pass, chunking, the memory budget, few-shot draws."""

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup_zoo.evaluation.knn import knn_predict
from selfsup_zoo.evaluation.knn_search import (
    few_shot_indices,
    knn_accuracy,
    rows_per_chunk,
    topk_accuracy,
    topk_neighbours,
)


def brute_force_votes(train, labels, test, k, temperature, num_classes):
    """Per test row: sort all training rows by (-similarity, index), take k, add exp(sim / T)."""
    votes = torch.zeros(test.shape[0], num_classes, dtype=torch.float64)
    for m, query in enumerate(test.tolist()):
        sims = [sum(a * b for a, b in zip(query, row, strict=True)) for row in train.tolist()]
        order = sorted(range(len(sims)), key=lambda i: (-sims[i], i))[:k]
        for i in order:
            votes[m, int(labels[i])] += math.exp(sims[i] / temperature)
    return votes


def brute_force_accuracy(votes, targets):
    top1 = top5 = 0
    for row, y in zip(votes.tolist(), targets.tolist(), strict=True):
        ranked = sorted(range(len(row)), key=lambda c: (-row[c], c))
        top1 += ranked[0] == y
        top5 += y in ranked[:5]
    return 100.0 * top1 / len(targets), 100.0 * top5 / len(targets)


def quantised(n, d, gen):
    """Features on a coarse grid (multiples of 1/4): dot products are exact in float32, so equal
    similarities are really equal and ties are exercised."""
    return torch.randint(-2, 3, (n, d), generator=gen).float() / 4


def test_votes_equal_brute_force_on_random_features_with_fewer_than_100_test_images():
    gen = torch.Generator().manual_seed(0)
    train = F.normalize(torch.randn(60, 16, generator=gen), dim=1)
    labels = torch.randint(0, 7, (60,), generator=gen)
    test = F.normalize(torch.randn(13, 16, generator=gen), dim=1)
    for k in (1, 5, 20, 60):
        got = knn_predict(train, labels, test, k=k, temperature=0.07, num_classes=7)
        want = brute_force_votes(train, labels, test, k, 0.07, 7)
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-3)


def test_ties_are_broken_by_the_lower_training_index_in_every_chunking():
    gen = torch.Generator().manual_seed(1)
    base = quantised(6, 3, gen)
    train = torch.cat([base, base, base])  # every similarity appears at least three times
    labels = torch.arange(18) % 5  # equal rows carry different labels: the tie decides the vote
    test = quantised(9, 3, gen)
    for k in (1, 2, 4, 7, 11):
        want = brute_force_votes(train, labels, test, k, 0.5, 5)
        for rows in (1, 2, 9, 100):
            got = knn_predict(train, labels, test, k=k, temperature=0.5, num_classes=5, chunk=rows)
            torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)
    _, idx = topk_neighbours(train, test, 18, chunk_rows=4)
    for row in range(9):  # full order: similarity descending, ties by index ascending
        sims = (test[row] @ train.T).tolist()
        assert idx[row].tolist() == sorted(range(18), key=lambda i: (-sims[i], i))


def test_several_k_from_one_pass_equal_separate_runs_and_the_brute_force_accuracy():
    gen = torch.Generator().manual_seed(2)
    train = F.normalize(torch.randn(80, 8, generator=gen), dim=1)
    labels = torch.randint(0, 6, (80,), generator=gen)
    test = F.normalize(torch.randn(25, 8, generator=gen), dim=1)
    targets = torch.randint(0, 6, (25,), generator=gen)
    ks = (1, 10, 20, 100, 200)  # 100 and 200 exceed the 80 training features: clipped
    together = knn_accuracy(train, labels, test, targets, ks=ks, num_classes=6)
    for k in ks:
        alone = knn_accuracy(train, labels, test, targets, ks=(k,), num_classes=6)[k]
        assert together[k] == alone
        votes = brute_force_votes(train, labels, test, min(k, 80), 0.07, 6)
        top1, top5 = brute_force_accuracy(votes, targets)
        assert together[k]["top1"] == pytest.approx(top1) and together[k]["top5"] == pytest.approx(
            top5
        )
    assert together[100]["k_used"] == 80 and together[200] == together[100] | {"k_used": 80.0}


def test_chunked_search_equals_unchunked_and_any_test_count_works():
    gen = torch.Generator().manual_seed(3)
    train = F.normalize(torch.randn(50, 8, generator=gen), dim=1)
    for m in (0, 1, 7, 101):
        test = F.normalize(torch.randn(m, 8, generator=gen), dim=1)
        whole = topk_neighbours(train, test, 12, chunk_rows=10_000)
        tiny_budget = topk_neighbours(train, test, 12, memory_budget_gb=(50 * 8 * 4 + 600) / 1e9)
        # Same neighbours; similarities to the last bit only where BLAS picks the same kernel
        # for a 1-row and a 101-row product, which it need not.
        assert torch.equal(whole[1], tiny_budget[1]) and whole[1].shape == (m, 12)
        torch.testing.assert_close(whole[0], tiny_budget[0], rtol=0, atol=1e-6)


def test_memory_budget_sizes_chunks_and_the_default_fits_an_imagenet_bank_in_24_gb():
    rows = rows_per_chunk(1_281_167, 2048, 16.0)
    assert rows >= 256
    bank = 4 * 1_281_167 * 2048
    assert bank + rows * 1_281_167 * 12 <= 16e9 < 24e9
    assert rows_per_chunk(100, 4, 100 * 4 * 4 / 1e9 + 1e-9) == 1  # always at least one row
    with pytest.raises(ValueError, match="does not fit --memory-budget-gb"):
        rows_per_chunk(1_281_167, 2048, 8.0)


def test_equal_scores_rank_the_lower_class_first():
    scores = torch.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    acc = topk_accuracy(scores, torch.tensor([1, 0]), (1, 2))
    assert acc == {1: 100.0, 2: 100.0}
    assert topk_accuracy(scores, torch.tensor([2, 2]), (1, 2)) == {1: 0.0, 2: 50.0}


def test_few_shot_draws_n_per_class_repeatably():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    a = few_shot_indices(labels, 2, 3, torch.Generator().manual_seed(5))
    b = few_shot_indices(labels, 2, 3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.bincount(labels[a]).tolist() == [2, 2, 2]
    draws = {
        tuple(few_shot_indices(labels, 2, 3, torch.Generator().manual_seed(s)).tolist())
        for s in range(10)
    }
    assert len(draws) > 1
    with pytest.raises(ValueError, match="fewer than --shots 4"):
        few_shot_indices(labels, 4, 3, torch.Generator().manual_seed(0))
