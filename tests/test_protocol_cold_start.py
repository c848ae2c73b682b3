"""cold_start: the invariants of its three kinds, on the real Scientific data."""

import numpy as np
import pytest

from bench.errors import BenchError
from protocols import PROTOCOLS

CS = PROTOCOLS.get("cold_start")


def rows(cases):
    """(user, history, target) of every case."""
    o = cases.hist_offsets
    return [(int(u), cases.hist_items[o[i]:o[i + 1]], int(t)) for i, (u, t) in enumerate(zip(cases.users, cases.targets))]


def train_seqs(train):
    return [train.items[train.offsets[i]:train.offsets[i + 1]] for i in range(len(train))]


@pytest.fixture(scope="module")
def item_split(scientific):
    protocol = CS(CS.Config(kind="item"))
    return protocol, protocol.split(scientific)


def test_item_no_cold_item_in_training(scientific, item_split):
    protocol, split = item_split
    cold = protocol.cold_items(scientific)
    assert len(cold) == round(0.1 * scientific.n_items) == split.definition["cold_items"]
    assert not np.isin(split.train.items, cold).any()
    assert split.train.item_counts(scientific.n_items)[cold].sum() == 0
    assert split.train.lengths().min() >= 1


def test_item_targets_cold_histories_warm_users_disjoint(scientific, item_split):
    protocol, split = item_split
    cold = set(protocol.cold_items(scientific).tolist())
    valid, test = split.valid, split.unlock_test()
    assert len(valid) >= 100 and len(test) >= 100
    assert not set(valid.users.tolist()) & set(test.users.tolist())
    assert abs(len(valid) - len(test)) <= 1
    assert set(valid.targets.tolist()) <= cold and set(test.targets.tolist()) <= cold
    assert not np.isin(valid.hist_items, list(cold)).any() and not np.isin(test.hist_items, list(cold)).any()
    for u, hist, target in rows(test)[:300]:
        seq = scientific.sequence(u)
        last_cold = max(i for i, x in enumerate(seq) if x in cold)
        assert seq[last_cold] == target
        np.testing.assert_array_equal(hist, [x for x in seq[:last_cold] if x not in cold])
        assert len(hist) >= 1


def test_item_training_is_warm_sequences_cut_at_the_evaluated_target(scientific, item_split):
    protocol, split = item_split
    cold = protocol.cold_items(scientific)
    cases = {u: h for c in (split.valid, split.unlock_test()) for u, h, _ in rows(c)}
    expected = []
    for u in range(scientific.n_users):
        seq = scientific.sequence(u)
        seq = cases[u] if u in cases else seq[~np.isin(seq, cold)]
        if len(seq):
            expected.append(seq)
    got = train_seqs(split.train)
    assert len(got) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))
    d = split.definition
    assert d["train_interactions"] + d["cold_interactions_removed"] + d["warm_interactions_after_target_removed"] \
        == scientific.n_interactions


def test_item_split_is_seeded(scientific, item_split):
    _, split = item_split
    again = CS(CS.Config(kind="item")).split(scientific)
    np.testing.assert_array_equal(again.valid.users, split.valid.users)
    np.testing.assert_array_equal(again.train.items, split.train.items)
    other = CS(CS.Config(kind="item", seed=1))
    assert not np.array_equal(other.cold_items(scientific), item_split[0].cold_items(scientific))


@pytest.mark.parametrize("kind", ["item", "long_tail", "user"])
def test_too_few_cases_is_a_clear_error(scientific, kind):
    with pytest.raises(BenchError, match=f"cold_start kind={kind} .* cases \\(< min_cases=100000\\)"):
        CS(CS.Config(kind=kind, max_users=300, min_cases=100000)).split(scientific)


def test_long_tail_targets_are_rare_and_all_users_kept(scientific):
    split = CS(CS.Config(kind="long_tail", tail_max_count=5)).split(scientific)
    counts = split.train.item_counts(scientific.n_items)
    with pytest.raises(BenchError, match="locked"):
        split.test_sets()
    test = split.unlock_test()
    assert counts[test.targets].max() <= 5
    full = split.test_sets()["all"]
    assert len(full) == len(split.valid) == scientific.n_users == split.definition["test_cases_all"]
    assert len(test) == (counts[full.targets] <= 5).sum() == split.definition["test_cases"]
    # same training data as leave_one_out
    loo = PROTOCOLS.get("leave_one_out")
    np.testing.assert_array_equal(loo(loo.Config()).split(scientific).train.items, split.train.items)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_user_histories_are_short_and_cold_users_untrained(scientific, k):
    split = CS(CS.Config(kind="user", user_history=k)).split(scientific)
    valid, test = split.valid, split.unlock_test()
    assert np.diff(test.hist_offsets).max() <= k and np.diff(valid.hist_offsets).max() <= k
    assert not set(valid.users.tolist()) & set(test.users.tolist())
    cold = set(valid.users.tolist()) | set(test.users.tolist())
    assert len(cold) == split.definition["cold_users"] == round(0.2 * scientific.n_users)
    for u, hist, target in rows(test)[:200]:
        seq = scientific.sequence(u)
        assert target == seq[-1]
        np.testing.assert_array_equal(hist, seq[-1 - k:-1])
    warm = [scientific.sequence(u) for u in range(scientific.n_users) if u not in cold]
    got = train_seqs(split.train)
    assert len(got) == len(warm) and all(np.array_equal(a, b) for a, b in zip(got, warm))
    full = split.test_sets()["full_history"]
    np.testing.assert_array_equal(full.targets, test.targets)
    assert np.diff(full.hist_offsets).sum() == sum(len(scientific.sequence(u)) - 1 for u in test.users)


def test_definition_names_only_the_kinds_thresholds():
    d = CS(CS.Config(kind="user")).definition()
    assert d["kind"] == "user" and d["user_history"] == 2 and "item_fraction" not in d


def test_item_new_items_are_not_training_classes(scientific, item_split):
    protocol, split = item_split
    cold = protocol.cold_items(scientific)
    assert split.train_classes is not None and not split.train_classes[cold].any()
    assert split.train_classes[1:].sum() == scientific.n_items - len(cold)
    as_negatives = CS(CS.Config(kind="item", new_items="negatives")).split(scientific)
    assert as_negatives.train_classes is None
    assert CS(CS.Config(kind="long_tail")).split(scientific).train_classes is None


def test_item_new_items_keep_their_initial_embeddings(scientific, item_split):
    """SASRec trained on the strict split never moves a held-out item's embedding (no target, no
    negative), while the warm items' embeddings train; 'negatives' moves them."""
    import torch
    from helpers import fit_steps

    from bench.engine.batching import make_rows
    from bench.nn.model import ModelContext
    from bench.plugins import get_model_class

    protocol, split = item_split
    cold = torch.as_tensor(protocol.cold_items(scientific))
    inp, tgt = make_rows(split.train, 50, "packed")
    batch = {"input": inp[:64].long(), "target": tgt[:64].long(), "lengths": (inp[:64] > 0).sum(1)}
    sasrec = get_model_class("sasrec")
    moved = {}
    for classes in (split.train_classes, None):
        torch.manual_seed(0)
        ctx = ModelContext(scientific.n_items, 50, split.train.item_counts(scientific.n_items), train_classes=classes)
        model = sasrec(sasrec.Config(dropout=0.0), ctx)
        before = model.item_emb.weight.detach().clone()
        fit_steps(model, batch, steps=3)
        delta = (model.item_emb.weight.detach() - before).abs().sum(1)
        moved[classes is None] = (delta[cold].max().item(), delta[1:].max().item())
    assert moved[False][0] == 0.0 and moved[False][1] > 0
    assert moved[True][0] > 0


# Every registered model whose loss cannot honour train_classes refuses them: tests/test_conformance.py
