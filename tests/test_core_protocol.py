"""leave_one_out and the batch layouts built from it."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.data.dataset import from_sequences
from bench.engine.batching import packed_rows, prefix_rows
from bench.errors import BenchError
from protocols import PROTOCOLS

LOO = PROTOCOLS.get("leave_one_out")


def test_targets_are_last_and_second_last(scientific):
    split = LOO(LOO.Config()).split(scientific)
    for u in (0, 1, 247, 8441):
        seq = scientific.sequence(u)
        assert split.valid.targets[u] == seq[-2]
        assert split.unlock_test().targets[u] == seq[-1]
        np.testing.assert_array_equal(split.train.items[split.train.offsets[u] : split.train.offsets[u + 1]], seq[:-2])
    assert split.definition["train_targets"] == 34101  # = rows of the UniSRec train file


def test_test_split_is_locked_until_unlocked(small_split):
    small_split.test_unlocked = False
    with pytest.raises(BenchError, match="test split is locked"):
        _ = small_split.test
    assert len(small_split.unlock_test()) == 400


def test_histories_truncated_to_max_len(scientific):
    split = LOO(LOO.Config(max_len=5)).split(scientific)
    hist, lengths = split.valid.padded_histories(5)
    seq = scientific.sequence(0)
    np.testing.assert_array_equal(hist[0], seq[-7:-2])
    assert lengths.max() == 5


def pairs(inp, tgt):
    """Set of (history tuple, target) pairs a batch layout trains."""
    out = []
    for row_in, row_t in zip(inp, tgt):
        for j in np.flatnonzero(row_t):
            out.append((tuple(row_in[: j + 1]), int(row_t[j])))
    return sorted(out)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(1, 9), min_size=3, max_size=14), min_size=1, max_size=6), st.integers(2, 6))
def test_packed_and_prefix_layouts_train_identical_pairs(seqs, max_len):
    ds = from_sequences("t", [str(i) for i in range(9)], [str(u) for u in range(len(seqs))],
                        [np.array(s) for s in seqs])
    split = LOO(LOO.Config(max_len=max_len)).split(ds)
    a, b = pairs(*prefix_rows(split.train, max_len)), pairs(*packed_rows(split.train, max_len))
    assert a == b
    assert len(a) == sum(len(s) - 3 for s in seqs)
    assert all(len(hist) <= max_len for hist, _ in a)


def test_short_sequences_dropped_and_empty_refused():
    ds = from_sequences("t", ["a", "b", "c"], ["u", "v"], [np.array([1, 2]), np.array([1, 2, 3])])
    split = LOO(LOO.Config()).split(ds)
    assert split.definition["users_dropped_too_short"] == 1
    tiny = from_sequences("t", ["a", "b"], ["u"], [np.array([1, 2])])
    with pytest.raises(BenchError, match="no user has the 3 interactions"):
        LOO(LOO.Config()).split(tiny)


def test_future_training_event_is_refused():
    seqs = [np.array([1, 2, 3, 4]), np.array([2, 3, 4])]
    ok = from_sequences("t", list("abcd"), ["u", "v"], seqs, timestamps=np.array([1, 2, 3, 4, 5, 6, 7]))
    LOO(LOO.Config()).split(ok)
    bad = from_sequences("t", list("abcd"), ["u", "v"], seqs, timestamps=np.array([1, 9, 3, 4, 5, 6, 7]))
    with pytest.raises(BenchError, match="user u has a training event later than its validation"):
        LOO(LOO.Config()).split(bad)


@pytest.mark.parametrize("bucket", [False, True])
def test_batches_cover_every_row_once(small_split, bucket):
    import torch

    from bench.engine.batching import iterate_batches, make_rows

    inp, tgt = make_rows(small_split.train, 20, "prefix")
    seen = []
    for batch in iterate_batches(inp, tgt, 16, torch.Generator().manual_seed(0), bucket):
        assert batch["input"].shape[1] == batch["lengths"].max()  # trimmed to the longest row
        seen.extend(map(tuple, torch.nn.functional.pad(batch["target"], (0, 20 - batch["target"].shape[1])).tolist()))
    assert sorted(seen) == sorted(map(tuple, tgt.tolist()))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=3, max_size=20), st.integers(1, 8))
def test_no_target_in_its_own_training_prefix(seq, max_len):
    """Every training pair (history, target) of a user is (seq[j-h:j], seq[j]) with j before the
    validation position: the target event is never inside its history, and no pair reaches the
    validation or test events (repeat items may of course occur in the history)."""
    ds = from_sequences("t", [str(i) for i in range(6)], ["u"], [np.array(seq)])
    split = LOO(LOO.Config(max_len=max_len)).split(ds)
    inp, tgt = prefix_rows(split.train, max_len)
    assert len(inp) == len(seq) - 3
    for row, (x, t) in enumerate(zip(inp, tgt)):
        j = row + 1  # target position in the user's sequence
        h = min(j, max_len)
        assert j <= len(seq) - 3
        np.testing.assert_array_equal(x[:h], seq[j - h : j])
        assert t[h - 1] == seq[j] and (t != 0).sum() == 1
