"""Chunked full ranking: chunk invariance, padding, history masking, bad scores."""

import numpy as np
import pytest
import torch

from bench.engine.evaluator import EvalConfig, evaluate
from bench.engine.metrics import target_ranks
from bench.errors import BenchError


class FixedScores(torch.nn.Module):
    """Scores from a fixed table indexed by the history's first item (deterministic oracle)."""

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.n_items = table.shape[1] - 1

    def score(self, history, lengths):
        return self.table[history[:, 0]]


def test_chunking_and_padding(small_split):
    g = torch.Generator().manual_seed(0)
    n = small_split.n_items
    table = torch.rand(n + 1, n + 1, generator=g)
    table[:, 0] = 10.0  # the padding item scores highest: it must not count
    model = FixedScores(table)
    cases = small_split.valid
    ranks = {}
    for budget in (10**9, (n + 1) * 7):  # one chunk vs. chunks of 7 users
        cfg = EvalConfig(max_scores_in_memory=budget)
        ranks[budget] = evaluate(model, cases, 20, cfg, torch.device("cpu")).ranks
    a, b = ranks.values()
    np.testing.assert_array_equal(a, b)
    hist, _ = cases.padded_histories(20)
    s = table[torch.from_numpy(hist[:, 0])]
    s[:, 0] = -torch.inf
    np.testing.assert_array_equal(a, target_ranks(s, torch.from_numpy(cases.targets)).numpy())


def test_history_masking_never_masks_target(small_split):
    n = small_split.n_items
    cases = small_split.valid
    hist, lengths = cases.padded_histories(20)
    target_of = {tuple(h[:n]): t for h, n, t in zip(hist, lengths, cases.targets)}

    class HistoryLover(torch.nn.Module):
        """History items score 5, the target 1 (unless it is a repeat), everything else 0."""

        n_items = n

        def score(self, history, lengths):
            s = torch.zeros(history.size(0), n + 1)
            for row, (h, k) in enumerate(zip(history.tolist(), lengths.tolist())):
                s[row, target_of[tuple(h[:k])]] = 1.0
            s.scatter_(1, history, 5.0)
            return s

    def run(mask):
        return evaluate(HistoryLover(), cases, 20, EvalConfig(mask_history=mask), torch.device("cpu")).ranks

    unmasked, masked = run(False), run(True)
    assert (masked == 1).all()  # only the target survives among the positives, repeats included
    distinct_history = np.array([len(set(cases.hist_items[cases.hist_offsets[i]:cases.hist_offsets[i + 1]][-20:]))
                                 for i in range(len(cases))])
    repeat = np.array([cases.targets[i] in cases.hist_items[cases.hist_offsets[i]:cases.hist_offsets[i + 1]][-20:]
                       for i in range(len(cases))])
    assert repeat.any(), "slice should contain a repeat purchase"
    np.testing.assert_array_equal(unmasked, np.where(repeat, distinct_history, distinct_history + 1))


def test_nan_scores_refused(small_split):
    class Broken(torch.nn.Module):
        n_items = small_split.n_items

        def score(self, history, lengths):
            return torch.full((history.size(0), self.n_items + 1), float("nan"))

    with pytest.raises(BenchError, match="NaN/inf scores"):
        evaluate(Broken(), small_split.valid, 20, EvalConfig(), torch.device("cpu"))
