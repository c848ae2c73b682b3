"""Stratified reports: buckets partition the cases and recombine to the overall means."""

import numpy as np
import pytest

from bench.engine.metrics import per_user_metrics
from bench.errors import BenchError
from bench.report.strata import POPULARITY_BUCKETS, item_popularity_buckets, parse_by, stratify, stratify_runs
from protocols import PROTOCOLS


@pytest.fixture(scope="module")
def loo_split(scientific):
    loo = PROTOCOLS.get("leave_one_out")
    return loo(loo.Config()).split(scientific)


def fake_metrics(n, seed=0):
    return per_user_metrics(np.random.default_rng(seed).integers(1, 200, n), (10, 20))


def test_buckets_partition_cases_and_recombine(scientific, loo_split):
    cases, counts = loo_split.valid, loo_split.train.item_counts(scientific.n_items)
    pu = fake_metrics(len(cases))
    df = stratify(pu, cases, counts, metrics=["NDCG@10", "Recall@20"])
    for dim in ("popularity", "length"):
        part = df[df["by"] == dim]
        assert part["cases"].sum() == len(cases)
        assert part["share"].sum() == pytest.approx(1.0)
        for m in ("NDCG@10", "Recall@20"):
            assert (part[m] * part["cases"]).sum() / len(cases) == pytest.approx(pu[m].mean())
    assert list(df[df["by"] == "length"]["bucket"]) == ["1-3", "4-7", "8-15", "16+"]
    assert list(df[df["by"] == "popularity"]["bucket"]) == ["head", "torso", "tail", "unseen"]


def test_popularity_buckets_follow_interaction_shares(scientific, loo_split):
    counts = loo_split.train.item_counts(scientific.n_items)
    b = item_popularity_buckets(counts)
    share = np.bincount(b, weights=counts, minlength=4) / counts.sum()
    assert 0.2 <= share[0] < 0.3 and 0.45 <= share[0] + share[1] < 0.6
    assert (b[counts == 0] == 3).all() and (b[counts > 0] != 3).all()
    # monotone: a more popular item is never in a less popular bucket
    order = np.argsort(-counts[1:], kind="stable") + 1
    seen = b[order][counts[order] > 0]
    assert (np.diff(seen) >= 0).all()
    assert POPULARITY_BUCKETS[3] == "unseen"


def test_cold_item_targets_are_unseen(scientific):
    cs = PROTOCOLS.get("cold_start")
    split = cs(cs.Config(kind="item")).split(scientific)
    df = stratify(fake_metrics(len(split.valid)), split.valid, split.train.item_counts(scientific.n_items),
                  by=["popularity"])
    assert list(df["bucket"]) == ["unseen"]


def test_runs_table_and_errors(scientific, loo_split):
    cases, counts = loo_split.valid, loo_split.train.item_counts(scientific.n_items)
    runs = [("A", fake_metrics(len(cases), 0)), ("A", fake_metrics(len(cases), 1)), ("B", fake_metrics(len(cases), 2))]
    out = stratify_runs(runs, cases, counts, metrics=["NDCG@10"])
    assert set(out["model"]) == {"A", "B"}
    assert (out[out["model"] == "A"]["seeds"] == 2).all() and "±" in out[out["model"] == "A"]["NDCG@10"].iloc[0]
    assert parse_by("popularity, length") == ["popularity", "length"]
    with pytest.raises(BenchError, match="unknown dimension"):
        parse_by("popularity,genre")
    with pytest.raises(BenchError, match="values for"):
        stratify({"NDCG@10": np.zeros(3)}, cases, counts)
