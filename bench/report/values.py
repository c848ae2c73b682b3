"""Metric values of stored runs, from the records alone: any metric of the registry
(bench.engine.metrics.REGISTRY) is computed at report time from the per-user test ranks a record
stores, so a metric registered after the runs needs no rerun.

Per (run, split, metric): the value the evaluator stored (the record's mean, the per-user array)
when there is one, else the metric of the stored ranks (rank, and rank_upper under average ties:
the exact expectation over a random tie order). Records written before ranks were stored keep
their metric arrays; their ranks are recovered from the stored MRR@K (1/rank, exact for every rank
within K under pessimistic or optimistic ties; a rank past K is only known to be past it), so a
new metric at a cutoff up to K is computed from them too.
"""

from __future__ import annotations

import numpy as np

from bench.engine.metrics import RANK_KEYS, metrics_from_ranks, parse_metric
from bench.errors import BenchError


class RunValues:
    """Metric values of the runs of one results store (None: only what records hold themselves)."""

    def __init__(self, store=None):
        self.store = store
        self._arrays: dict[str, dict[str, dict[str, np.ndarray]]] = {}  # run -> split -> name -> per user
        self._records: dict[str, dict | None] = {}

    def mean(self, run_hash: str, record: dict | None, split: str, metric: str) -> float:
        stored = self._record(run_hash, record).get("metrics", {}).get(split, {})
        if metric in stored:
            return stored[metric]
        return float(self.per_user(run_hash, record, split, metric).mean())

    def per_user(self, run_hash: str, record: dict | None, split: str, metric: str) -> np.ndarray:
        """`record`: the run's record when at hand (None: loaded from the store when needed)."""
        arrays = self._split_arrays(run_hash, split)
        if metric not in arrays:
            ranks = self._ranks(run_hash, self._record(run_hash, record), split, metric)
            arrays[metric] = metrics_from_ranks(*ranks, names=[metric])[metric]
        return arrays[metric]

    def _record(self, run_hash: str, record: dict | None) -> dict:
        if record is None:
            if run_hash not in self._records:
                self._records[run_hash] = self.store.load(run_hash) if self.store is not None else None
            record = self._records[run_hash]
            if record is None:
                raise BenchError(f"run {run_hash}: no complete record")
        return record

    def _split_arrays(self, run_hash: str, split: str) -> dict[str, np.ndarray]:
        if run_hash not in self._arrays:
            if self.store is None:
                raise BenchError(f"run {run_hash}: its per-user arrays are needed (a metric its record does not "
                                 f"hold) but no results store was given")
            self._arrays[run_hash] = self.store.per_user(run_hash)
        arrays = self._arrays[run_hash].get(split)
        if arrays is None:
            raise BenchError(f"run {run_hash}: no per-user arrays of {split!r} "
                             f"(has: {', '.join(self._arrays[run_hash])})")
        return arrays

    def _ranks(self, run_hash: str, record: dict, split: str, metric: str) -> tuple[np.ndarray, np.ndarray | None]:
        family, k = parse_metric(metric)  # an unknown metric: one line naming the registered ones
        arrays = self._split_arrays(run_hash, split)
        if RANK_KEYS[0] in arrays:
            return arrays[RANK_KEYS[0]], arrays.get(RANK_KEYS[1])
        ties = record.get("spec", {}).get("evaluation", {}).get("ties", "pessimistic")
        recovered = recover_ranks(arrays) if ties != "average" else None
        if recovered is None:
            raise BenchError(f"run {run_hash}: {metric} is not stored and the record predates stored ranks "
                             f"({ties} ties, no MRR@K to recover them from); run it again with --force")
        ranks, known = recovered
        if not family.at_k or k > known:
            raise BenchError(f"run {run_hash}: {metric} needs ranks past {known}, and this record (written "
                             f"before ranks were stored) knows each rank only up to {known}; run it again "
                             f"with --force")
        return ranks, None


def recover_ranks(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, int] | None:
    """(ranks, K) from a stored MRR@K with the largest K: rank = 1 / MRR where it is positive, K + 1
    (some rank past K) where it is zero. Exact for one rank per user (not for average ties)."""
    cutoffs = [int(k) for name, _, k in (m.partition("@") for m in arrays) if name == "MRR" and k.isdigit()]
    if not cutoffs:
        return None
    known = max(cutoffs)
    mrr = np.asarray(arrays[f"MRR@{known}"], dtype=np.float64)
    with np.errstate(divide="ignore"):
        ranks = np.where(mrr > 0, np.rint(1 / mrr), known + 1)
    return ranks, known
