"""One metric registry, metrics computed at report time from stored ranks: a metric registered
after the runs is rendered from their records without a rerun (and without training or data)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.engine import metrics
from bench.engine.evaluator import EvalConfig, evaluate
from bench.engine.store import ResultStore
from bench.experiment.suites import load_suite
from bench.report.console import summary
from bench.report.tables import build_table, render
from bench.report.values import RunValues, recover_ranks
from protocols.base import EvalCases

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.fixture
def committed(tmp_path) -> ResultStore:
    shutil.copytree(RESULTS / "store", tmp_path / "store")
    return ResultStore(tmp_path / "store")


@pytest.fixture
def f1(monkeypatch):
    """F1@k of one relevant item: 2PR/(P+R) = 2/(k+1) on a hit. Registered for this test only."""
    monkeypatch.setitem(metrics.REGISTRY, "F1", metrics.Metric("F1", lambda r, k: (r <= k) * 2 / (k + 1)))


def test_a_metric_registered_after_the_runs_renders_from_their_records(committed, f1, monkeypatch):
    import bench.engine.runner as runner

    def no_data(*_a, **_k):
        raise AssertionError("the report touched the raw data")

    monkeypatch.setattr(runner, "run_hash", no_data)
    monkeypatch.setattr(runner.RunEnv, "dataset", no_data)
    side = json.loads((RESULTS / "fidelity-cpu.md.cells.json").read_text())
    suite = load_suite(side["suite"])
    suite = suite.model_copy(update={"metrics": ["Recall@10", "F1@10", "F1@50"]})
    table = build_table(suite, committed, side["budget"])
    assert sum(r.n_done for r in table.rows) == 9 and not any(r.uncomputed for r in table.rows)
    for row in table.rows:
        recs = [committed.load(h) for h in row.seeds.values()]
        # F1@k = Recall@k * 2 / (k + 1) per user, so per run too: checked against the stored Recall
        for k in (10, 50):
            want = [r["metrics"]["test"][f"Recall@{k}"] * 2 / (k + 1) for r in recs]
            assert row.means[f"F1@{k}"] == pytest.approx(np.mean(want), abs=1e-12)
            assert row.stds[f"F1@{k}"] == pytest.approx(np.std(want, ddof=1), abs=1e-12)
    md = render(table, "md")
    assert "| F1@10 | F1@50 |" in md and f"{table.rows[0].means['F1@10']:.4f}" in md
    # the significance test runs on the new metric's per-user values too
    assert {c["metric"] for c in table.comparisons} >= {"F1@10"}
    # the console format of the same rows
    records = [committed.load(h) | {"run_hash": h} for h in table.rows[0].seeds.values()]
    df = summary(records, ("F1@10",), store=committed)
    assert list(df["F1@10"])[0].startswith(f"{table.rows[0].means['F1@10']:.4f} ± ")


def test_a_metric_past_what_old_records_know_is_said_not_invented(committed, monkeypatch):
    monkeypatch.setitem(metrics.REGISTRY, "MeanRank", metrics.Metric("MeanRank", lambda r, k: r, at_k=False))
    suite = load_suite("fidelity").model_copy(update={"metrics": ["Recall@10", "MeanRank", "Recall@100"]})
    table = build_table(suite, committed, "cpu")
    assert all("Recall@10" in r.means and "MeanRank" not in r.means for r in table.rows if r.n_done)
    assert "Not computable from the stored records" in table.caption and "MeanRank" in table.caption
    assert "Recall@100" in table.caption and "--force" in table.caption
    assert "| — |" in render(table, "md")


def test_ranks_recovered_from_old_records_reproduce_every_stored_metric(committed):
    for key, record in committed.records():
        assert record["spec"]["evaluation"]["ties"] == "pessimistic"
        for split, arrays in committed.per_user(key).items():
            ranks, known = recover_ranks(arrays)
            assert known == 50 and ranks.min() >= 1
            # records from runs since ranks were stored hold them too: compare the metrics only
            stored_metrics = {n: a for n, a in arrays.items() if n not in metrics.RANK_KEYS}
            again = metrics.metrics_from_ranks(ranks, None, list(stored_metrics))
            for name, stored in stored_metrics.items():
                np.testing.assert_array_equal(again[name], stored, err_msg=f"{key} {split} {name}")


class Flat(torch.nn.Module):
    """Scores tied in blocks of 10 items: ranks are ranges under average ties."""

    n_items = 200

    def score(self, history, lengths):
        return -((torch.arange(self.n_items + 1) - 1) // 10).float().expand(len(history), -1).clone()


@pytest.mark.parametrize("ties", ["pessimistic", "average"])
def test_stored_ranks_give_any_metric_as_the_evaluator_would(tmp_path, monkeypatch, ties):
    rng = np.random.default_rng(0)
    targets = rng.integers(1, Flat.n_items + 1, 64)
    cases = EvalCases(np.arange(64), targets, np.arange(65), rng.integers(1, 200, 64))
    res = evaluate(Flat(), cases, 5, EvalConfig(ties=ties), torch.device("cpu"))
    assert res.per_user["rank"].dtype == np.int32 and ("rank_upper" in res.per_user) == (ties == "average")
    store = ResultStore(tmp_path / "store")
    record = {"spec": {"evaluation": {"ties": ties}}, "metrics": {"test": res.means}}
    store.save("r1", record, {"test": res.per_user})
    values = RunValues(store)
    # every built-in metric from the stored ranks equals what the evaluator stored
    for name in metrics.metric_names():
        stored = store.per_user("r1")["test"][name]
        computed = metrics.metrics_from_ranks(res.per_user["rank"], res.per_user.get("rank_upper"), [name])[name]
        np.testing.assert_allclose(computed, stored, rtol=0, atol=1e-15)
    # a metric registered now (no cutoff: every rank counts) from the same records
    monkeypatch.setitem(metrics.REGISTRY, "MeanRank", metrics.Metric("MeanRank", lambda r, k: r, at_k=False))
    got = values.per_user("r1", record, "test", "MeanRank")
    lo = (targets - 1) // 10 * 10 + 1  # the target's block of ten: optimistic .. pessimistic rank
    want = lo + 9 if ties == "pessimistic" else lo + 4.5
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert values.mean("r1", record, "test", "MeanRank") == pytest.approx(float(np.mean(want)))
    assert not math.isnan(values.mean("r1", record, "test", "NDCG@10"))


def test_one_registry_and_one_default_list():
    from bench.experiment.suites import Suite

    assert metrics.select_metrics(None) == metrics.DEFAULT_METRICS
    assert Suite(name="x", title="x", datasets=["scientific"], models=["pop"]).metrics == list(metrics.DEFAULT_METRICS)
    assert metrics.metric_names() == [f"{m}@{k}" for m in metrics.METRICS for k in metrics.CUTOFFS]
    assert metrics.parse_metric("NDCG@10") == (metrics.REGISTRY["NDCG"], 10)
    for bad in ("NDCG", "NDCG@x", "Nope@10"):
        with pytest.raises(Exception, match="unknown"):
            metrics.parse_metric(bad)


def test_sampled_ranks_bounds_mode_is_the_tie_range():
    from bench.engine.candidates import sampled_ranks

    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (30, 51), generator=g).float()  # many ties on purpose
    targets = torch.randint(1, 51, (30,), generator=g)
    cand = torch.stack([torch.randperm(50, generator=g)[:10] + 1 for _ in range(30)])
    for ties in ("pessimistic", "optimistic", "average"):
        lo, hi = sampled_ranks(scores, targets, cand, ties, bounds=True)
        if ties != "average":
            assert torch.equal(lo, hi) and torch.equal(lo, sampled_ranks(scores, targets, cand, ties))
        else:
            assert torch.equal(lo, sampled_ranks(scores, targets, cand, "optimistic"))
            assert torch.equal(hi, sampled_ranks(scores, targets, cand, "pessimistic"))
            assert (hi > lo).any()
