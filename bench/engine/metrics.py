"""Ranks of target items and per-user ranking metrics.

With one target per case: Recall@k = Hit@k = [rank <= k], NDCG@k = 1/log2(rank + 1),
MRR@k = 1/rank and Precision@k = Hit@k / k (each zero when rank > k).

Ties: pessimistic ranks the target below every item with an equal score, optimistic above them;
average gives each metric's exact expectation when the tied items are ordered uniformly at
random (the target's rank is then uniform on optimistic..pessimistic), not the metric of the
mid-rank, which differs wherever the metric is non-linear in the rank or the range crosses k.
"""

from __future__ import annotations

import numpy as np
import torch

METRICS = ("Recall", "NDCG", "MRR", "Hit", "Precision")
CUTOFFS = (5, 10, 20, 50)
TIE_POLICIES = ("pessimistic", "optimistic", "average")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, ties: str = "pessimistic") -> torch.Tensor:
    """1-based rank of each row's target among all columns of `scores`.

    pessimistic: number of items scoring >= the target (ties ranked above it);
    optimistic: 1 + number scoring strictly higher; average: the mean of the two.
    """
    t = scores.gather(1, targets.view(-1, 1))
    if ties not in TIE_POLICIES:
        raise ValueError(f"unknown tie policy {ties!r}; valid: {', '.join(TIE_POLICIES)}")
    # int32 sums: summing bools into the default int64 costs an extra full-size copy
    at_least = (scores >= t).sum(1, dtype=torch.int32).double() if ties != "optimistic" else None
    higher = (scores > t).sum(1, dtype=torch.int32).double() if ties != "pessimistic" else None
    if ties == "pessimistic":
        return at_least
    if ties == "optimistic":
        return higher + 1
    return (higher + 1 + at_least) / 2


def rank_bounds(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(optimistic, pessimistic) 1-based ranks: the range a random tie order puts the target in."""
    return target_ranks(scores, targets, "optimistic"), target_ranks(scores, targets, "pessimistic")


def expected_metrics(lo: np.ndarray, hi: np.ndarray, cutoffs=CUTOFFS) -> dict[str, np.ndarray]:
    """Per-user expectation of every metric when the rank is uniform on the integers lo..hi."""
    lo, hi = np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)
    count = (hi - lo + 1).astype(np.float64)
    top = max(cutoffs)
    r = np.arange(1, top + 1, dtype=np.float64)
    # prefix sums over ranks 1..top (index 0 = empty sum) of each metric's per-rank value
    prefix = {"hit": np.arange(top + 1, dtype=np.float64),
              "ndcg": np.concatenate([[0.0], np.cumsum(1 / np.log2(r + 1))]),
              "mrr": np.concatenate([[0.0], np.cumsum(1 / r)])}
    out = {}
    for k in cutoffs:
        upper = np.clip(np.minimum(hi, k), 0, top)
        lower = np.clip(lo - 1, 0, top)
        inside = upper > lower
        mean = {name: np.where(inside, p[upper] - p[np.minimum(lower, upper)], 0.0) / count for name, p in prefix.items()}
        out[f"Recall@{k}"] = mean["hit"]
        out[f"Hit@{k}"] = mean["hit"]
        out[f"NDCG@{k}"] = mean["ndcg"]
        out[f"MRR@{k}"] = mean["mrr"]
        out[f"Precision@{k}"] = mean["hit"] / k
    return out


def per_user_metrics(ranks: np.ndarray, cutoffs=CUTOFFS, upper: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Metrics of each rank; with `upper`, the expectation over a rank uniform on ranks..upper."""
    if upper is not None:
        return expected_metrics(ranks, upper, cutoffs)
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {}
    for k in cutoffs:
        hit = (ranks <= k).astype(np.float64)
        out[f"Recall@{k}"] = hit
        out[f"Hit@{k}"] = hit
        out[f"NDCG@{k}"] = hit / np.log2(ranks + 1)
        out[f"MRR@{k}"] = hit / ranks
        out[f"Precision@{k}"] = hit / k
    return out


def mean_metrics(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: float(values.mean()) for name, values in per_user.items()}
