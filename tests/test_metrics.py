import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.engine.metrics import per_user_metrics, target_ranks


def brute_rank(scores: np.ndarray, target: int, ties: str) -> float:
    """Oracle: sort every item, place the target first/last/mid among its equals."""
    t = scores[target]
    higher = sum(1 for s in scores if s > t)
    equal_others = sum(1 for i, s in enumerate(scores) if s == t and i != target)
    return {"pessimistic": higher + equal_others + 1, "optimistic": higher + 1,
            "average": higher + 1 + equal_others / 2}[ties]


def test_hand_computed_ranks_with_ties():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.5, 0.5, 0.2]])
    target = torch.tensor([3])
    assert target_ranks(scores, target, "pessimistic").item() == 4  # 0.9 + three items at 0.5
    assert target_ranks(scores, target, "optimistic").item() == 2
    assert target_ranks(scores, target, "average").item() == 3


def test_hand_computed_metrics():
    m = per_user_metrics(np.array([1, 3, 10, 11, 60]))
    np.testing.assert_allclose(m["Recall@10"], [1, 1, 1, 0, 0])
    np.testing.assert_allclose(m["NDCG@10"], [1, 0.5, 1 / np.log2(11), 0, 0])
    np.testing.assert_allclose(m["MRR@10"], [1, 1 / 3, 0.1, 0, 0])
    np.testing.assert_allclose(m["Precision@5"], [0.2, 0.2, 0, 0, 0])
    np.testing.assert_allclose(m["Hit@50"], [1, 1, 1, 1, 0])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=2, max_size=30), st.data())
def test_ranks_match_brute_force_oracle(values, data):
    scores = np.array(values, dtype=np.float64)
    target = data.draw(st.integers(0, len(values) - 1))
    for ties in ("pessimistic", "optimistic", "average"):
        got = target_ranks(torch.tensor(scores[None]), torch.tensor([target]), ties).item()
        assert got == brute_rank(scores, target, ties)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 500), min_size=1, max_size=50))
def test_metrics_within_unit_interval(ranks):
    for values in per_user_metrics(np.array(ranks)).values():
        assert ((values >= 0) & (values <= 1)).all()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000))
def test_permuting_item_ids_leaves_ranks_unchanged(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 8, (5, 30), generator=g).float()  # many ties on purpose
    targets = torch.randint(0, 30, (5,), generator=g)
    perm = torch.randperm(30, generator=g)
    inverse = torch.argsort(perm)
    for ties in ("pessimistic", "optimistic", "average"):
        a = target_ranks(scores, targets, ties)
        b = target_ranks(scores[:, perm], inverse[targets], ties)
        assert torch.equal(a, b)


def test_ranx_oracle_agrees():
    import ranx  # a test dependency: an independent implementation of the metrics
    rng = np.random.default_rng(0)
    scores = rng.random((20, 40))  # continuous scores: no ties, so every tie policy agrees with ranx
    targets = rng.integers(1, 40, 20)
    ours = per_user_metrics(target_ranks(torch.tensor(scores), torch.tensor(targets)).numpy())
    qrels = ranx.Qrels({f"u{u}": {f"i{targets[u]}": 1} for u in range(20)})
    run = ranx.Run({f"u{u}": {f"i{i}": float(scores[u, i]) for i in range(40)} for u in range(20)})
    for name, ranx_name in [("NDCG@10", "ndcg@10"), ("Recall@5", "recall@5"), ("MRR@10", "mrr@10"), ("Hit@20", "hit_rate@20")]:
        assert ours[name].mean() == pytest.approx(ranx.evaluate(qrels, run, ranx_name), abs=1e-9)
