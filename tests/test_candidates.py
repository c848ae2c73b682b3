"""Sampled candidates: one stored, seeded set per case, shared by every model and seed."""

import numpy as np
import pytest
import torch

from bench.engine.candidates import build_candidates, load_or_build, parse_spec, sampled_ranks
from bench.engine.metrics import target_ranks
from bench.errors import BenchError


@pytest.fixture(scope="module")
def split(small_split):
    return small_split


def build(split, scientific, folder, spec, seed=0):
    return load_or_build(folder, split.valid, "valid", spec, dataset_hash=scientific.content_hash,
                         split_definition=split.definition, n_items=scientific.n_items,
                         train_counts=split.train.item_counts(scientific.n_items), seed=seed)


@pytest.mark.parametrize("spec", ["uni100", "pop100"])
def test_sets_are_valid_stored_and_identical_when_rebuilt(split, scientific, tmp_path, spec):
    a = build(split, scientific, tmp_path / "a", spec)
    b = build(split, scientific, tmp_path / "b", spec)  # drawn again from scratch
    c = build(split, scientific, tmp_path / "a", spec)  # loaded from the store
    assert a.shape == (len(split.valid), 100)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert len(list((tmp_path / "a").glob("candidates-*.npz"))) == 1
    assert not (a == split.valid.targets[:, None]).any()
    assert (a >= 1).all() and (a <= scientific.n_items).all()
    assert all(len(np.unique(row)) == 100 for row in a)
    assert not np.array_equal(a, build(split, scientific, tmp_path / "a", spec, seed=1))


def test_pop_favours_popular_items(split, scientific, tmp_path):
    counts = split.train.item_counts(scientific.n_items)
    uni = build(split, scientific, tmp_path, "uni100")
    pop = build(split, scientific, tmp_path, "pop100")
    assert counts[pop].mean() > 2 * counts[uni].mean()
    assert (counts[pop] > 0).all()


def test_without_replacement_matches_successive_sampling():
    w = np.array([0, 1, 2, 3, 4], dtype=float)  # item 0 is padding
    cand = build_candidates(np.full(20000, 4), 4, parse_spec("pop2"), 0, w)  # target 4 excluded
    # successive sampling among {1,2,3} (weights 1,2,3): P(first pair = (a, b))
    pairs = {(a, b): w[a] / 6 * w[b] / (6 - w[a]) for a in (1, 2, 3) for b in (1, 2, 3) if a != b}
    for (a, b), p in pairs.items():
        freq = np.mean((cand[:, 0] == a) & (cand[:, 1] == b))
        assert freq == pytest.approx(p, abs=0.015)


def test_sampled_ranks_against_brute_force():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (50, 30), generator=g).float()  # many ties
    targets = torch.randint(1, 30, (50,), generator=g)
    cand = torch.stack([torch.randperm(29, generator=g)[:10] + 1 for _ in range(50)])
    cand = torch.where(cand == targets[:, None], (cand % 29) + 1, cand)
    for ties in ("pessimistic", "optimistic", "average"):
        got = sampled_ranks(scores, targets, cand, ties)
        for i in range(50):
            sub = torch.cat([scores[i, targets[i]].view(1), scores[i, cand[i]]]).view(1, -1)
            assert got[i] == target_ranks(sub, torch.zeros(1, dtype=torch.long), ties)[0]
        assert got.min() >= 1 and got.max() <= 11


def test_bad_specs():
    for bad in ("uni", "pop0", "random100"):
        with pytest.raises(BenchError, match="uni<N> or pop<N>"):
            parse_spec(bad)
    with pytest.raises(BenchError, match="only 3 items can be drawn"):
        build_candidates(np.array([1]), 3, parse_spec("uni5"), 0)
