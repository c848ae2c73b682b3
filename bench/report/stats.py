"""Paired significance tests between two models, multiple-comparison correction, effect sizes.

Direction convention, everywhere: `a` is the model under study, `b` the one it is compared
with, and every difference is mean(a) - mean(b): positive means `a` scored higher.

Per-user inputs are aligned by evaluation case order (the same dataset and protocol give the
same cases in the same order); a model's per-user arrays are averaged over its seeds before
the per-user tests, and the seed-level test pairs per-seed means by seed number.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats as sps

from bench.errors import BenchError

TESTS = {
    "ttest": "two-sided paired t-test on per-user metrics averaged over seeds",
    "wilcoxon": "two-sided Wilcoxon signed-rank test on per-user metrics averaged over seeds",
    "seed_ttest": "two-sided paired t-test on per-seed means",
}
CORRECTIONS = {"holm": "Holm-Bonferroni step-down correction", "none": "no correction"}


def seed_average(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Per-user arrays of one model (one per seed) -> their mean per user."""
    if not arrays:
        raise BenchError("no per-user arrays to average")
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise BenchError(f"per-user arrays of different lengths across seeds: {sorted(lengths)}")
    return np.mean(np.stack([np.asarray(a, dtype=np.float64) for a in arrays]), axis=0)


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise BenchError(f"paired tests need two 1-d arrays over the same cases (got {a.shape} and {b.shape})")
    if len(a) == 0:
        raise BenchError("paired tests need at least one case")
    return a, b


def paired_ttest(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided paired t-test of a against b: (t statistic, p). t > 0 when a scores higher.

    All-zero differences give (0, 1); a constant non-zero difference gives (+-inf, 0).
    """
    a, b = _check_pair(a, b)
    d = a - b
    if len(d) < 2:
        return math.nan, math.nan
    if np.all(d == 0):
        return 0.0, 1.0
    if np.all(d == d[0]):
        return math.copysign(math.inf, d[0]), 0.0
    res = sps.ttest_rel(a, b, alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def wilcoxon_test(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of a against b (zero differences dropped, 'wilcox').

    Returns (W statistic, p); all-zero differences give (0, 1) rather than an error.
    """
    a, b = _check_pair(a, b)
    d = a - b
    if np.all(d == 0):
        return 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scipy's "sample size too small" notes
        res = sps.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def bootstrap_ci(
    a: np.ndarray, b: np.ndarray, n_boot: int = 10_000, seed: int = 0, level: float = 0.95, chunk: int = 500
) -> tuple[float, float]:
    """Percentile CI of mean(a) - mean(b) from a paired bootstrap over cases (seeded)."""
    a, b = _check_pair(a, b)
    d = a - b
    n = len(d)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for lo in range(0, n_boot, chunk):
        hi = min(lo + chunk, n_boot)
        idx = rng.integers(0, n, size=(hi - lo, n))
        means[lo:hi] = d[idx].mean(axis=1)
    alpha = (1.0 - level) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values over one family (same order as the input).

    NaN p-values (comparisons that could not be tested) stay NaN and are not counted in the
    family size.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def correct(pvalues: Sequence[float], method: str) -> np.ndarray:
    if method == "holm":
        return holm(pvalues)
    if method == "none":
        return np.asarray(pvalues, dtype=np.float64)
    raise BenchError(f"unknown correction {method!r}; valid: {', '.join(CORRECTIONS)}")


@dataclass
class PairedComparison:
    """Model a vs model b on one metric: mean(a) - mean(b) with tests and a bootstrap CI."""

    metric: str
    a: str
    b: str
    n_cases: int
    seeds_a: int
    seeds_b: int
    mean_a: float
    mean_b: float
    diff: float  # mean(a) - mean(b)
    ci_low: float
    ci_high: float
    t_stat: float
    p_ttest: float
    w_stat: float
    p_wilcoxon: float
    seeds_paired: int
    seed_t_stat: float
    p_seed_ttest: float  # NaN with fewer than two common seeds
    p_adjusted: dict[str, float] = field(default_factory=dict)  # test -> corrected p

    def p(self, test: str) -> float:
        return {"ttest": self.p_ttest, "wilcoxon": self.p_wilcoxon, "seed_ttest": self.p_seed_ttest}[test]

    def to_dict(self) -> dict:
        return asdict(self)


def compare(
    per_seed_a: Mapping[int, np.ndarray],
    per_seed_b: Mapping[int, np.ndarray],
    metric: str = "",
    a: str = "a",
    b: str = "b",
    n_boot: int = 10_000,
    boot_seed: int = 0,
) -> PairedComparison:
    """Compare two models from their per-user arrays of one metric, keyed by seed.

    Per-user tests and the bootstrap use each model's seed-averaged per-user values; the
    seed-level t-test pairs the per-seed means of the seeds both models have.
    """
    if not per_seed_a or not per_seed_b:
        raise BenchError(f"{metric}: both models need at least one seed ({a}: {len(per_seed_a)}, {b}: {len(per_seed_b)})")
    ua = seed_average(list(per_seed_a.values()))
    ub = seed_average(list(per_seed_b.values()))
    ua, ub = _check_pair(ua, ub)
    t, pt = paired_ttest(ua, ub)
    w, pw = wilcoxon_test(ua, ub)
    low, high = bootstrap_ci(ua, ub, n_boot=n_boot, seed=boot_seed)
    common = sorted(set(per_seed_a) & set(per_seed_b))
    if len(common) >= 2:
        st, ps = paired_ttest(
            np.array([np.mean(per_seed_a[s]) for s in common]), np.array([np.mean(per_seed_b[s]) for s in common])
        )
    else:
        st, ps = math.nan, math.nan
    return PairedComparison(
        metric=metric, a=a, b=b, n_cases=len(ua), seeds_a=len(per_seed_a), seeds_b=len(per_seed_b),
        mean_a=float(ua.mean()), mean_b=float(ub.mean()), diff=float(ua.mean() - ub.mean()),
        ci_low=low, ci_high=high, t_stat=t, p_ttest=pt, w_stat=w, p_wilcoxon=pw,
        seeds_paired=len(common), seed_t_stat=st, p_seed_ttest=ps,
    )


def correct_family(comparisons: Sequence[PairedComparison], method: str = "holm",
                   tests: Sequence[str] = ("ttest", "wilcoxon", "seed_ttest")) -> None:
    """Fill each comparison's p_adjusted[test], correcting over the whole given family."""
    for test in tests:
        adjusted = correct([c.p(test) for c in comparisons], method)
        for c, p in zip(comparisons, adjusted):
            c.p_adjusted[test] = float(p)


def caption_text(test: str, correction: str, alpha: float, family: str) -> str:
    corr = "no correction" if correction == "none" else f"{CORRECTIONS[correction]} over {family}"
    return f"{TESTS[test]}; {corr}; alpha = {alpha:g}"
