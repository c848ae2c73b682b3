"""Significance code against scipy/statsmodels on fixed inputs, and the direction convention."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from bench.errors import BenchError
from bench.report import stats


def fixed_pair(n=300, shift=0.05, seed=7):
    rng = np.random.default_rng(seed)
    b = rng.random(n)
    a = np.clip(b + shift + rng.normal(0, 0.1, n), 0, 1)
    return a, b


def test_ttest_and_wilcoxon_match_scipy_on_fixed_inputs():
    a, b = fixed_pair()
    t, p = stats.paired_ttest(a, b)
    ref = sps.ttest_rel(a, b)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    w, pw = stats.wilcoxon_test(a, b)
    ref_w = sps.wilcoxon(a, b)
    assert w == pytest.approx(ref_w.statistic) and pw == pytest.approx(ref_w.pvalue)
    # binary per-user hits (ties and zero differences, the usual case for Recall@k)
    rng = np.random.default_rng(1)
    ha, hb = (rng.random(500) < 0.3).astype(float), (rng.random(500) < 0.2).astype(float)
    assert stats.wilcoxon_test(ha, hb)[1] == pytest.approx(sps.wilcoxon(ha, hb, zero_method="wilcox").pvalue)
    assert stats.paired_ttest(ha, hb)[1] == pytest.approx(sps.ttest_rel(ha, hb).pvalue)


def test_direction_a_better_gives_positive_difference():
    a, b = fixed_pair(shift=0.1)
    c = stats.compare({0: a}, {0: b}, metric="m", a="A", b="B", n_boot=2000)
    assert c.diff > 0 and c.mean_a > c.mean_b
    assert c.t_stat > 0 and c.p_ttest < 1e-6 and c.p_wilcoxon < 1e-6
    assert 0 < c.ci_low < c.diff < c.ci_high
    flipped = stats.compare({0: b}, {0: a}, n_boot=2000)
    assert flipped.diff == pytest.approx(-c.diff) and flipped.t_stat < 0
    assert flipped.p_ttest == pytest.approx(c.p_ttest)


def test_all_zero_differences_do_not_crash():
    a = np.array([0.0, 1.0, 0.5, 0.25])
    assert stats.wilcoxon_test(a, a.copy()) == (0.0, 1.0)
    assert stats.paired_ttest(a, a.copy()) == (0.0, 1.0)
    c = stats.compare({0: a, 1: a}, {0: a, 1: a}, n_boot=100)
    assert c.diff == 0 and c.p_wilcoxon == 1.0 and c.p_ttest == 1.0 and c.p_seed_ttest == 1.0
    assert c.ci_low == c.ci_high == 0.0


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(3)
    for p in (
        np.array([0.01, 0.04, 0.03, 0.005, 0.5, 0.04]),  # ties
        rng.random(12) * 0.1,
        np.array([0.9, 0.95, 0.99]),  # adjusted values capped at 1
        np.array([0.02]),
    ):
        ours = stats.holm(p)
        oracle = multipletests(p, method="holm")[1]
        np.testing.assert_allclose(ours, oracle)
    # NaN entries (untestable comparisons) are left out of the family
    p = np.array([0.01, np.nan, 0.02, 0.04])
    ours = stats.holm(p)
    assert math.isnan(ours[1])
    np.testing.assert_allclose(ours[[0, 2, 3]], multipletests(p[[0, 2, 3]], method="holm")[1])


def test_seed_average_and_seed_level_test():
    rng = np.random.default_rng(5)
    a = {s: rng.random(50) + 0.05 * s for s in range(4)}
    b = {s: rng.random(50) for s in range(4)}
    c = stats.compare(a, b, n_boot=200)
    ua, ub = np.mean([a[s] for s in range(4)], axis=0), np.mean([b[s] for s in range(4)], axis=0)
    assert c.p_ttest == pytest.approx(sps.ttest_rel(ua, ub).pvalue)
    assert c.diff == pytest.approx(ua.mean() - ub.mean())
    seed_ref = sps.ttest_rel([a[s].mean() for s in range(4)], [b[s].mean() for s in range(4)])
    assert c.p_seed_ttest == pytest.approx(seed_ref.pvalue) and c.seeds_paired == 4
    # the seed-level test pairs by seed number: only common seeds count
    c2 = stats.compare(a, {0: b[0], 2: b[2], 9: b[1]}, n_boot=100)
    assert c2.seeds_paired == 2
    one = stats.compare({0: a[0]}, {0: b[0]}, n_boot=100)
    assert math.isnan(one.p_seed_ttest)


def test_bootstrap_is_seeded_and_checks_alignment():
    a, b = fixed_pair(n=100)
    assert stats.bootstrap_ci(a, b, n_boot=500, seed=1) == stats.bootstrap_ci(a, b, n_boot=500, seed=1)
    assert stats.bootstrap_ci(a, b, n_boot=500, seed=1) != stats.bootstrap_ci(a, b, n_boot=500, seed=2)
    with pytest.raises(BenchError):
        stats.paired_ttest(a, b[:-1])
    with pytest.raises(BenchError):
        stats.seed_average([a, a[:-1]])


def test_correct_family_fills_adjusted_p():
    rng = np.random.default_rng(0)
    base = rng.random(200)
    comps = [stats.compare({0: base + d}, {0: base + rng.normal(0, 0.05, 200)}, n_boot=100)
             for d in (0.0, 0.01, 0.05)]
    stats.correct_family(comps, "holm")
    raw = [c.p_wilcoxon for c in comps]
    np.testing.assert_allclose([c.p_adjusted["wilcoxon"] for c in comps], multipletests(raw, method="holm")[1])
    assert "Holm" in stats.caption_text("ttest", "holm", 0.05, "x") and "t-test" in stats.caption_text(
        "ttest", "holm", 0.05, "x")
