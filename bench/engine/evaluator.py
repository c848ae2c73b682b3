"""Full-ranking evaluation, chunked over users so memory stays bounded for any catalogue size."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from bench.engine.candidates import sampled_ranks
from bench.engine.metrics import CUTOFFS, TIE_POLICIES, mean_metrics, per_user_metrics, rank_range
from bench.errors import BenchError
from protocols.base import EvalCases

# Bumped whenever the evaluator's numbers change (it keys every run): 2 = exact expected metrics
# under random tie-breaking for ties=average (was the mid-rank).
NUMERICS_VERSION = 2


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ties: str = Field("pessimistic", pattern="|".join(TIE_POLICIES))
    mask_history: bool = False  # MSM4SR's code does not mask the user's history
    cutoffs: tuple[int, ...] = CUTOFFS
    max_scores_in_memory: int = 32_000_000  # floats per chunk: users_per_chunk x (n_items + 1)
    batch_users: int = 2048


@dataclass
class EvalResult:
    ranks: np.ndarray
    per_user: dict[str, np.ndarray]  # every registered metric, and the ranks (metrics.RANK_KEYS)
    seconds: float
    sampled: dict[str, np.ndarray] | None = None  # per-case metrics of the target among its candidates

    @property
    def means(self) -> dict[str, float]:
        return mean_metrics(self.per_user)


def users_per_chunk(n_items: int, cfg: EvalConfig) -> int:
    return max(1, min(cfg.batch_users, cfg.max_scores_in_memory // (n_items + 1)))


@torch.no_grad()
def evaluate(model, cases: EvalCases, max_len: int, cfg: EvalConfig, device: torch.device,
             candidates: np.ndarray | None = None) -> EvalResult:
    """Full-ranking ranks of every case; with `candidates` ([n_cases, n] negatives, in case order)
    also the rank of the target among itself and its candidates, from the same score rows."""
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    histories, lengths = cases.padded_histories(max_len)
    # Cases sorted by history length and each chunk trimmed to its longest history: with
    # left-aligned sequences the trailing padding columns change nothing, and most are short.
    order = np.argsort(lengths, kind="stable")
    histories, lengths = torch.from_numpy(histories[order]), torch.from_numpy(lengths[order])
    targets = torch.from_numpy(cases.targets[order])
    step = users_per_chunk(model.n_items, cfg)
    # [2, cases]: the rank range a random tie order puts the target in (lo = hi unless ties=average)
    ranks = torch.empty(2, len(cases), dtype=torch.float64)
    sampled = torch.empty(2, len(cases), dtype=torch.float64)
    for lo in range(0, len(cases), step):
        hi = min(lo + step, len(cases))
        width = max(int(lengths[hi - 1]), 1)
        scores = model.score(histories[lo:hi, :width].to(device), lengths[lo:hi].to(device)).float().contiguous()
        if not torch.isfinite(scores[:, 1:].sum()) and not torch.isfinite(scores[:, 1:]).all():
            raise BenchError(f"{type(model).__name__} produced NaN/inf scores during evaluation")
        tgt = targets[lo:hi].to(device)
        if cfg.mask_history:
            mask_seen_items(scores, cases, order[lo:hi], tgt)
        scores[:, 0] = -torch.inf  # the padding item is never ranked
        rows = torch.from_numpy(order[lo:hi])
        ranks[:, rows] = rank_range(scores, tgt, cfg.ties).cpu()
        if candidates is not None:
            cand = torch.from_numpy(candidates[order[lo:hi]]).to(device)
            sampled[:, rows] = sampled_ranks(scores, tgt, cand, cfg.ties, bounds=True).cpu()
    model.train(was_training)
    rank_arr = ranks.numpy()
    sampled_metrics = _metrics(sampled.numpy(), cfg) if candidates is not None else None
    return EvalResult(rank_arr.mean(0), _metrics(rank_arr, cfg), time.perf_counter() - start, sampled_metrics)


def _metrics(bounds: np.ndarray, cfg: EvalConfig) -> dict[str, np.ndarray]:
    """Every registered metric per user, with the ranks they come from (stored with the record, so
    a metric registered later is computed from them without a rerun: bench.report.values)."""
    lo, hi = bounds.astype(np.int32)
    if cfg.ties == "average":
        return {**per_user_metrics(bounds[0], cfg.cutoffs, upper=bounds[1]), "rank": lo, "rank_upper": hi}
    return {**per_user_metrics(bounds[0], cfg.cutoffs), "rank": lo}


def mask_seen_items(scores: torch.Tensor, cases: EvalCases, rows: np.ndarray, targets: torch.Tensor) -> None:
    """Exclude every item of the users' full histories from ranking, except the target itself."""
    keep = scores.gather(1, targets.view(-1, 1)).clone()
    sub = cases.subset(rows)
    r = np.repeat(np.arange(len(rows)), np.diff(sub.hist_offsets))
    scores[torch.from_numpy(r).to(scores.device), torch.from_numpy(sub.hist_items).to(scores.device)] = -torch.inf
    scores.scatter_(1, targets.view(-1, 1), keep)
