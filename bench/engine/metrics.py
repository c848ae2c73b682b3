"""Ranks of target items and per-user ranking metrics.

With one target per case: Recall@k = Hit@k = [rank <= k], NDCG@k = 1/log2(rank + 1),
MRR@k = 1/rank and Precision@k = Hit@k / k (each zero when rank > k). These are entries of
REGISTRY, the one list of metrics: the evaluator computes every entry, the report computes any
entry from a record's stored ranks, and a new metric is one `register` call.

Ties: pessimistic ranks the target below every item with an equal score, optimistic above them;
average gives each metric's exact expectation when the tied items are ordered uniformly at
random (the target's rank is then uniform on optimistic..pessimistic), not the metric of the
mid-rank, which differs wherever the metric is non-linear in the rank or the range crosses k.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bench.errors import BenchError


@dataclass(frozen=True)
class Metric:
    """A registered metric: `value(ranks, k)` gives each user's value from the 1-based rank of its
    target (a float array; k the cutoff, None for a metric without one). An @k metric is zero
    past k (the tie expectation sums it over ranks 1..k only)."""

    name: str
    value: Callable[[np.ndarray, int | None], np.ndarray]
    at_k: bool = True


# Per-user arrays stored beside the metrics: the target's rank (the optimistic end under average
# ties) and, under average ties, its pessimistic end (the rank is uniform on rank..rank_upper).
RANK_KEYS = ("rank", "rank_upper")

# The one metric registry: a new metric is one `register` call. Records store each user's test
# rank, so the report computes a metric registered after the runs (bench.report.values).
REGISTRY: dict[str, Metric] = {}


def register(name: str, value: Callable[[np.ndarray, int | None], np.ndarray], at_k: bool = True) -> Metric:
    if "@" in name or name in RANK_KEYS:
        raise ValueError(f"metric name {name!r}: no '@' (the cutoff is added) and not {RANK_KEYS}")
    REGISTRY[name] = Metric(name, value, at_k)
    return REGISTRY[name]


register("Recall", lambda r, k: (r <= k).astype(np.float64))
register("NDCG", lambda r, k: (r <= k) / np.log2(r + 1))
register("MRR", lambda r, k: (r <= k) / r)
register("Hit", lambda r, k: (r <= k).astype(np.float64))
register("Precision", lambda r, k: (r <= k) / k)

METRICS = tuple(REGISTRY)  # the built-in families, registered above (REGISTRY may hold more later)
CUTOFFS = (5, 10, 20, 50)
TIE_POLICIES = ("pessimistic", "optimistic", "average")
# The columns shown when none are asked for: `bench run`, the API's tables, a suite without `metrics`.
DEFAULT_METRICS = ("Recall@10", "NDCG@10", "Recall@20", "NDCG@20", "Recall@50", "NDCG@50")


def parse_metric(name: str) -> tuple[Metric, int | None]:
    """"NDCG@10" -> (the NDCG entry, 10); a metric without a cutoff is named bare."""
    family, at, k = name.partition("@")
    metric = REGISTRY.get(family)
    if metric is None or bool(at) != metric.at_k or (at and not (k.isdigit() and int(k) >= 1)):
        raise BenchError(f"metric {name!r}: unknown (registered: {', '.join(metric_names())})")
    return metric, int(k) if at else None


def metric_names(cutoffs=CUTOFFS, families=None) -> list[str]:
    """Every registered metric at every cutoff, family by family ("Recall@5", "Recall@10", ...)."""
    out = []
    for m in (REGISTRY[f] for f in families or REGISTRY):
        out += [f"{m.name}@{k}" for k in cutoffs] if m.at_k else [m.name]
    return out


def select_metrics(text: str | None, have=None) -> tuple[str, ...]:
    """"MRR@5,Hit" -> metric names among `have` (default: every registered metric at the
    evaluator's cutoffs); a bare name means each of its cutoffs, "all" every metric; None: the
    default columns."""
    if not text:
        return DEFAULT_METRICS
    have = list(have or metric_names())
    out: list[str] = []
    for name in (n.strip() for n in text.split(",") if n.strip()):
        if name == "all":
            out += have
            continue
        match = [m for m in have if m.lower() == name.lower() or m.lower().split("@")[0] == name.lower()]
        if not match:
            families = ", ".join(dict.fromkeys(m.split("@")[0] for m in have))
            cutoffs = ", ".join(dict.fromkeys(m.split("@")[1] for m in have if "@" in m))
            raise BenchError(f"--metrics {name!r}: unknown metric (metrics: {families}; cutoffs: {cutoffs}; "
                             f"e.g. MRR@5)")
        out += match
    return tuple(dict.fromkeys(out))


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


def rank_range(scores: torch.Tensor, targets: torch.Tensor, ties: str) -> torch.Tensor:
    """[2, rows]: (lo, hi) 1-based ranks under `ties`: the range a random tie order puts the target
    in for ties=average, else the one rank twice."""
    if ties == "average":
        return torch.stack(rank_bounds(scores, targets))
    r = target_ranks(scores, targets, ties)
    return torch.stack([r, r])


def metrics_from_ranks(lo: np.ndarray, hi: np.ndarray | None = None, names=None) -> dict[str, np.ndarray]:
    """Per-user values of `names` (default: every registered metric at CUTOFFS) from 1-based ranks;
    with `hi`, each metric's exact expectation when the rank is uniform on the integers lo..hi."""
    names = list(names if names is not None else metric_names())
    if hi is not None:
        return expected_metrics(lo, hi, names=names)
    ranks = np.asarray(lo, dtype=np.float64)
    out = {}
    for name in names:
        metric, k = parse_metric(name)
        out[name] = np.asarray(metric.value(ranks, k), dtype=np.float64)
    return out


def expected_metrics(lo: np.ndarray, hi: np.ndarray, cutoffs=CUTOFFS, names=None) -> dict[str, np.ndarray]:
    """Per-user expectation of every metric (or of `names`) when the rank is uniform on lo..hi:
    prefix sums of the metric's value over ranks 1..R (R = k for an @k metric, else the largest
    rank), differenced at the range's ends."""
    lo, hi = np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)
    count = (hi - lo + 1).astype(np.float64)
    out = {}
    for name in names if names is not None else metric_names(cutoffs):
        metric, k = parse_metric(name)
        top = k if metric.at_k else int(hi.max(initial=1))
        r = np.arange(1, top + 1, dtype=np.float64)
        prefix = np.concatenate([[0.0], np.cumsum(metric.value(r, k))])  # index 0: the empty sum
        upper = np.clip(hi, 0, top)
        lower = np.clip(lo - 1, 0, top)
        inside = upper > lower
        out[name] = np.where(inside, prefix[upper] - prefix[np.minimum(lower, upper)], 0.0) / count
    return out


def per_user_metrics(ranks: np.ndarray, cutoffs=CUTOFFS, upper: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every registered metric at `cutoffs` of each rank; with `upper`, the expectation over a rank
    uniform on ranks..upper."""
    return metrics_from_ranks(ranks, upper, metric_names(cutoffs))


def mean_metrics(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """Means of the metrics (not of the stored ranks)."""
    return {name: float(values.mean()) for name, values in per_user.items() if name not in RANK_KEYS}
