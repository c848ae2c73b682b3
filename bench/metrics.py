"""Ranks of target items and per-user ranking metrics.

With one target per case: Recall@k = Hit@k = [rank <= k], NDCG@k = 1/log2(rank + 1),
MRR@k = 1/rank and Precision@k = Hit@k / k (each zero when rank > k).
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


def per_user_metrics(ranks: np.ndarray, cutoffs=CUTOFFS) -> dict[str, np.ndarray]:
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
