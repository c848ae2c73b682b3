"""Per-case metrics bucketed by target popularity and by history length (`bench run --by popularity,length`).

Popularity (training frequency of the target item, from the split's training sequences):
    Items are ordered by training count, most frequent first. For an item with count c let
    share_above(c) = (training interactions of items with count > c) / (all training interactions).
        head   : share_above(c) < 0.2   (the most popular items, ~20% of training interactions)
        torso  : 0.2 <= share_above(c) < 0.5   (the next ~30%)
        tail   : share_above(c) >= 0.5 and c >= 1   (the least popular items, ~50% of interactions)
        unseen : c == 0   (never in training: e.g. every cold_start item target)
    Items with equal counts always share a bucket, so a boundary bucket may hold slightly more
    than its nominal share. Cut points are configurable (`shares`).
History length (the case's full history before the target, not truncated to max_len):
    1-3, 4-7, 8-15, 16+ (edges configurable; a 0 bucket appears only if a case has no history).
Every case falls in exactly one bucket per dimension; a bucket's row holds its case count, its
share of cases and the mean of each metric over its cases (the overall mean is the
case-weighted average of the bucket means).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench.engine.metrics import DEFAULT_METRICS, RANK_KEYS
from bench.errors import BenchError
from protocols.base import MAIN_TEST, EvalCases

DIMENSIONS = ("popularity", "length")
POPULARITY_SHARES = (0.2, 0.5)  # cumulative interaction shares closing head and torso
LENGTH_EDGES = (1, 4, 8, 16)  # bucket i = [edges[i], edges[i+1]); the last is open
POPULARITY_BUCKETS = ("head", "torso", "tail", "unseen")


def parse_by(text: str | Sequence[str]) -> list[str]:
    names = [x.strip() for x in text.split(",")] if isinstance(text, str) else list(text)
    names = [x for x in names if x]
    bad = [x for x in names if x not in DIMENSIONS]
    if bad:
        raise BenchError(f"--by: unknown dimension {bad[0]!r}; valid: {', '.join(DIMENSIONS)}")
    return names


def item_popularity_buckets(train_counts: np.ndarray, shares: tuple[float, float] = POPULARITY_SHARES) -> np.ndarray:
    """Bucket label (index into POPULARITY_BUCKETS) of every item id (index 0 = padding -> unseen)."""
    counts = np.asarray(train_counts, dtype=np.int64).copy()
    counts[0] = 0
    total = counts.sum()
    if total == 0:
        return np.full(len(counts), 3, dtype=np.int64)
    # interactions of items with count strictly greater than c, for each distinct c
    values, n_items = np.unique(counts, return_counts=True)  # ascending
    mass = values * n_items
    above = (mass[::-1].cumsum()[::-1] - mass) / total  # share strictly above each value
    share_above = above[np.searchsorted(values, counts)]
    out = np.where(share_above < shares[0], 0, np.where(share_above < shares[1], 1, 2))
    out[counts == 0] = 3
    return out.astype(np.int64)


def length_labels(edges: Sequence[int] = LENGTH_EDGES) -> list[str]:
    labels = []
    for lo, hi in zip(edges, list(edges[1:]) + [None]):
        labels.append(f"{lo}+" if hi is None else (f"{lo}" if hi - 1 == lo else f"{lo}-{hi - 1}"))
    return labels


def case_buckets(cases: EvalCases, train_counts: np.ndarray, by: str,
                 shares: tuple[float, float] = POPULARITY_SHARES, edges: Sequence[int] = LENGTH_EDGES
                 ) -> tuple[np.ndarray, list[str]]:
    """(bucket index of every case, bucket labels) for one dimension."""
    if by == "popularity":
        return item_popularity_buckets(train_counts, shares)[cases.targets], list(POPULARITY_BUCKETS)
    if by == "length":
        lengths = np.diff(cases.hist_offsets)
        idx = np.searchsorted(np.asarray(edges), lengths, side="right") - 1  # -1: shorter than edges[0]
        labels = length_labels(edges)
        if (idx < 0).any():
            return idx + 1, [f"<{edges[0]}" if edges[0] > 1 else "0", *labels]
        return idx, labels
    raise BenchError(f"unknown stratification {by!r}; valid: {', '.join(DIMENSIONS)}")


def stratify(per_user: dict[str, np.ndarray], cases: EvalCases, train_counts: np.ndarray,
             by: Sequence[str] = DIMENSIONS, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows (by, bucket) with cases, share and per-bucket metric means; empty buckets are omitted."""
    metrics = list(metrics or (k for k in per_user if k not in RANK_KEYS))
    n = len(cases)
    for m in metrics:
        if m not in per_user:
            raise BenchError(f"stratify: metric {m!r} not in the per-user results")
        if len(per_user[m]) != n:
            raise BenchError(f"stratify: {m} has {len(per_user[m])} values for {n} evaluation cases")
    rows = []
    for dim in by:
        idx, labels = case_buckets(cases, train_counts, dim)
        counts = np.bincount(idx, minlength=len(labels))
        sums = {m: np.bincount(idx, weights=per_user[m], minlength=len(labels)) for m in metrics}
        for b, label in enumerate(labels):
            if counts[b] == 0:
                continue
            rows.append({"by": dim, "bucket": label, "cases": int(counts[b]), "share": counts[b] / n,
                         **{m: sums[m][b] / counts[b] for m in metrics}})
    return pd.DataFrame(rows, columns=["by", "bucket", "cases", "share", *metrics])


def stratify_runs(runs: Sequence[tuple[str, dict[str, np.ndarray]]], cases: EvalCases, train_counts: np.ndarray,
                  by: Sequence[str] = DIMENSIONS, metrics: Sequence[str] = DEFAULT_METRICS) -> pd.DataFrame:
    """Several (model label, per-user arrays) runs on the same cases (e.g. models x seeds) -> one
    row per (by, bucket, model): cases, share and the mean over that model's seeds of the bucket
    means, formatted 'mean ± std' when there are several seeds."""
    frames = [stratify(pu, cases, train_counts, by, metrics).assign(model=label) for label, pu in runs]
    if not frames:
        raise BenchError("stratify: no runs")
    df = pd.concat(frames, ignore_index=True)
    grouped = df.groupby(["by", "bucket", "model"], sort=False)
    out = grouped[["cases", "share"]].first().reset_index()
    out.insert(3, "seeds", grouped.size().values)
    for m in metrics:
        mean, std = grouped[m].mean().values, grouped[m].std(ddof=1).fillna(0.0).values
        out[m] = [f"{a:.4f} ± {s:.4f}" if k > 1 else f"{a:.4f}" for a, s, k in zip(mean, std, out["seeds"])]
    out["share"] = out["share"].map(lambda x: f"{x:.1%}")
    return out


# ---- reporting helpers for `bench run` ------------------------------------------------------

EXTRA_TITLES = {
    "test:all": "all test cases (every user, unrestricted)",
    "test:full_history": "the same cold users with their full history",
}


def extra_parts(records: Sequence[dict]) -> list[str]:
    """Result parts beyond valid/test that every record carries (e.g. 'test:all', 'test_sampled')."""
    if not records:
        return []
    common = set.intersection(*(set(r["metrics"]) for r in records))
    return sorted(p for p in common if p not in ("valid", "test"))


def part_title(part: str, records: Sequence[dict]) -> str:
    if part == "test_sampled":
        spec = records[0]["protocol"].get("candidates")
        return f"sampled: target among {spec} candidates (full-ranking figure above)"
    return EXTRA_TITLES.get(part, part)


def stratified_tables(records: Sequence[dict], env, by: Sequence[str], metrics: Sequence[str] = DEFAULT_METRICS,
                      parts: Sequence[str] | None = None) -> list[tuple[str, pd.DataFrame]]:
    """(title, table) per (dataset, protocol setting, part) of `records`: their stored per-case
    test metrics bucketed by `by`. `env` is the RunEnv that ran them (splits, results store).
    Parts default to 'test' and every 'test:<name>' extra test set the records carry."""
    from bench.engine.spec import RunSpec
    from bench.report.values import RunValues

    values = RunValues(env.store)  # stored metrics, or computed from the stored ranks
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        spec = r["spec"]
        groups.setdefault((spec["dataset"], spec["protocol"], canonical(spec["protocol_params"])), []).append(r)
    out = []
    for (dataset, protocol, _), recs in groups.items():
        try:
            split = env.split(RunSpec.model_validate(recs[0]["spec"]))
        except BenchError as exc:  # tables and figures need records only; strata need the data too
            raise BenchError(f"strata (--by) need the raw data of {dataset} (users are bucketed by the split's "
                             f"item counts and history lengths, which records do not hold): {exc}") from None
        counts = split.train.item_counts(split.n_items)
        split.unlock_test()
        test_sets = split.test_sets()  # stored as 'test' (the main set) and 'test:<name>'
        wanted = parts or ["test", *(p for p in extra_parts(recs) if p.startswith("test:"))]
        for part in wanted:
            cases = test_sets[part.partition(":")[2] or MAIN_TEST]
            runs = [(r["label"], {m: values.per_user(r["run_hash"], r, part, m) for m in metrics}) for r in recs]
            kind = recs[0]["protocol"].get("kind")
            name = f"{protocol} ({kind})" if kind else protocol
            title = f"{dataset} / {name}: {'test' if part == 'test' else part_title(part, recs)} by {', '.join(by)}"
            out.append((title, stratify_runs(runs, cases, counts, by, metrics)))
        split.test_unlocked = False
    return out


def canonical(obj) -> str:
    from bench.hashing import canonical_json

    return canonical_json(obj)
