"""MSM4SR as the authors' code runs it, switch by switch, and tables that say what their numbers
need said (cap flags, one-run rows, rows that repeat another, how pre-training varies)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from bench.data.dataset import from_sequences
from bench.data.transforms import DataConfig, apply_data_options
from bench.engine.batching import iterate_batches
from bench.engine.metrics import expected_metrics, per_user_metrics
from bench.engine.spec import build_spec
from bench.errors import BenchError
from bench.report.tables import capped_stages
from msm4sr.augment import sequence_dropout

# ------------------------------------------------------------------ sequence dropout


def authors_item_seq_rand_drop(seq: torch.Tensor, lengths: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The released code's compaction, written out as the sequential scatter CPU performs: every
    real position writes its item at index cumsum(kept) - 1, later writes winning."""
    out = torch.zeros_like(seq)
    for b in range(seq.shape[0]):
        idx = -1
        for j in range(int(lengths[b])):
            idx += int(keep[b, j])
            out[b, idx] = seq[b, j]
    return out


def test_keep_last_dropout_equals_the_authors_scatter_draw_for_draw():
    g = torch.Generator().manual_seed(0)
    b, length = 64, 12
    lengths = torch.randint(1, length + 1, (b,), generator=g)
    seq = torch.where(torch.arange(length)[None] < lengths[:, None], torch.randint(1, 500, (b, length), generator=g), 0)
    ratio = torch.full((b,), 0.4)
    ours, new_len = sequence_dropout(seq, lengths, ratio, torch.Generator().manual_seed(7), keep_end="last")
    # the same draws as sequence_dropout makes: keep = u >= ratio on real positions, position 0 kept
    u = torch.rand((b, length), generator=torch.Generator().manual_seed(7))
    keep = (u >= ratio[:, None]) & (torch.arange(length)[None] < lengths[:, None])
    keep[:, 0] = True
    theirs = authors_item_seq_rand_drop(seq, lengths, keep)
    assert torch.equal(new_len, keep.sum(1))
    assert torch.equal(ours, theirs)


def test_survival_by_position_keep_last_vs_keep_first():
    n, length, p = 20000, 6, 0.3
    seq = torch.arange(1, length + 1).repeat(n, 1)  # item j+1 at position j
    lengths = torch.full((n,), length)
    ratio = torch.full((n,), p)
    survival = {}
    for end in ("last", "first"):
        out, _ = sequence_dropout(seq, lengths, ratio, torch.Generator().manual_seed(1), keep_end=end)
        survival[end] = np.array([(out == item).any(1).float().mean().item() for item in range(1, length + 1)])
    assert survival["last"][-1] == 1.0 and survival["first"][0] == 1.0
    # the other end is dropped with probability p (binomial sd ~0.003 at n = 20000)
    assert survival["last"][0] == pytest.approx(1 - p, abs=0.015)
    assert survival["first"][-1] == pytest.approx(1 - p, abs=0.015)
    assert np.allclose(survival["last"][:-1], 1 - p, atol=0.015)


# ------------------------------------------------------------------ pre-training batches


@pytest.mark.parametrize("model", ["msm4sr", "unisrec", "vqrec"])
def test_in_batch_negative_models_pretrain_on_random_batches_by_default(model):
    spec = build_spec("scientific_mm", "leave_one_out", model, 0, {})
    assert spec.trainer["pretrain"].bucket_by_length is False
    bucketed = build_spec("scientific_mm", "leave_one_out", model, 0, {"trainer.pretrain.bucket_by_length": True})
    assert bucketed.trainer["pretrain"].bucket_by_length is True


def test_random_batches_mix_lengths_bucketed_batches_do_not():
    # planted: half the rows hold one item, half hold 40
    n, width = 4096, 40
    lengths = torch.tensor([1, width] * (n // 2))
    inp = (torch.arange(width)[None] < lengths[:, None]).long()
    tgt = torch.zeros_like(inp)

    def spread(bucket):
        out = []
        for batch in iterate_batches(inp, tgt, 256, torch.Generator().manual_seed(0), bucket):
            lens = (batch["input"] > 0).sum(1).float()
            out.append(float((lens == 1).float().mean()))
        return np.array(out)

    mixed, bucketed = spread(False), spread(True)
    assert np.all((mixed > 0.3) & (mixed < 0.7))  # every random batch holds both kinds
    assert np.mean((bucketed == 0) | (bucketed == 1)) > 0.9  # bucketed batches are (almost) pure


# ------------------------------------------------------------------ data deduplication


def test_dedup_keep_last_then_user_core_on_a_planted_dataset():
    seqs = [np.array([1, 2, 1, 3, 4, 5]), np.array([2, 2, 2, 3, 4]), np.array([5, 4, 3, 2, 1])]
    ds = from_sequences("t", [f"i{i}" for i in range(1, 6)], ["a", "b", "c"], seqs,
                        timestamps=np.arange(16))
    ds.content_hash = "base"
    out = apply_data_options(ds, DataConfig(dedup="keep_last"))
    # user a: the first "1" goes (keep the last); user b falls to 3 items (< 5): removed
    assert out.user_ids == ["a", "c"]
    assert out.sequence(0).tolist() == [2, 1, 3, 4, 5]
    assert out.timestamps[:5].tolist() == [1, 2, 3, 4, 5]
    assert out.meta["repeated_rows_removed"] == 3 and out.content_hash != "base"
    assert out.item_ids == ds.item_ids  # the catalogue (and so the features) is kept
    assert apply_data_options(ds, DataConfig()) is ds


def test_dedup_on_scientific_mm_matches_the_authors_counts(data_root, cache):
    from bench.data.catalog import load_dataset

    ds = load_dataset("scientific_mm", data_root, cache)
    out = apply_data_options(ds, DataConfig(dedup="keep_last"))
    assert (out.n_users, out.meta["repeated_rows_removed"]) == (2888, 144)


# ------------------------------------------------------------------ the preset and per-seed pre-training


def test_authors_code_preset_sets_every_quirk_and_explicit_values_win():
    spec = build_spec("scientific_mm", "leave_one_out", "msm4sr", 0, {"msm4sr.preset": "authors_code"})
    p = spec.model_params
    assert (p["preset"], p["mask_padded_slots"], p["train_pooling"], p["same_target"], p["cmcl_form"],
            p["ratio_scope"], p["seq_dropout_keep"]) == ("authors_code", False, False, "logit0", "code", "batch", "last")
    assert spec.trainer["pretrain"].bucket_by_length is False and spec.data.dedup == "keep_last"
    mine = build_spec("scientific_mm", "leave_one_out", "msm4sr", 0,
                      {"msm4sr.preset": "authors_code", "msm4sr.train_pooling": True, "data.dedup": "none"})
    assert mine.model_params["train_pooling"] is True and mine.data.dedup == "none"
    default = build_spec("scientific_mm", "leave_one_out", "msm4sr", 0, {})
    assert default.model_params["seq_dropout_keep"] == "last" and default.data.dedup == "none"
    with pytest.raises(BenchError, match="preset"):
        build_spec("scientific_mm", "leave_one_out", "msm4sr", 0, {"msm4sr.preset": "nope"})


def test_each_seed_pretrains_on_its_own_unless_shared():
    from bench.engine.runner import stage_seed

    for seed in (0, 3):
        own = build_spec("scientific_mm", "leave_one_out", "msm4sr", seed, {})
        shared = build_spec("scientific_mm", "leave_one_out", "msm4sr", seed, {"trainer.pretrain.shared_seed": True})
        assert stage_seed(own, "pretrain") == seed
        assert stage_seed(shared, "pretrain") == 0


def test_spec_carries_numerics_versions():
    spec = build_spec("scientific", "leave_one_out", "sasrec", 0, {})
    assert set(spec.numerics) == {"model", "trainer", "evaluator"}


# ------------------------------------------------------------------ ties: exact expectations


def brute_force(lo: int, hi: int, k: int) -> dict[str, float]:
    ranks = range(lo, hi + 1)
    hit = [r <= k for r in ranks]
    return {"Recall": np.mean(hit), "NDCG": np.mean([h / math.log2(r + 1) for r, h in zip(ranks, hit)]),
            "MRR": np.mean([h / r for r, h in zip(ranks, hit)])}


def test_average_ties_give_the_exact_expectation_over_tie_orders():
    # enumerate every order of the tied items on small cases: the target's position among them
    for higher, tied in itertools.product([0, 3, 8, 9, 10, 48], [0, 1, 2, 5, 30]):
        orders = list(itertools.permutations(range(tied + 1))) if tied <= 5 else None
        if orders is not None:  # the target is item 0 among the tied; its rank in each order
            ranks = np.array([higher + 1 + o.index(0) for o in orders])
            want = {k: {m: np.mean(per_user_metrics(ranks, (k,))[f"{m}@{k}"]) for m in ("Recall", "NDCG", "MRR")}
                    for k in (5, 10, 50)}
        else:
            want = {k: brute_force(higher + 1, higher + tied + 1, k) for k in (5, 10, 50)}
        got = expected_metrics(np.array([higher + 1]), np.array([higher + tied + 1]), (5, 10, 50))
        for k, ms in want.items():
            for m, v in ms.items():
                assert got[f"{m}@{k}"][0] == pytest.approx(v, abs=1e-12), (higher, tied, k, m)


def test_average_ties_differ_from_the_mid_rank_where_it_matters():
    # 20 items tied at the top: mid-rank 10.5 misses @10, the expectation is 10/20
    got = expected_metrics(np.array([1]), np.array([20]), (10,))
    assert got["Recall@10"][0] == pytest.approx(0.5)
    assert per_user_metrics(np.array([10.5]), (10,))["Recall@10"][0] == 0.0


def test_evaluator_average_ties_through_a_model():
    from bench.engine.evaluator import EvalConfig, evaluate
    from protocols.base import EvalCases

    class Flat(torch.nn.Module):  # every item scores the same: rank uniform on 1..n
        n_items = 40

        def score(self, history, lengths):
            return torch.zeros(len(history), self.n_items + 1)

    cases = EvalCases(np.array([0]), np.array([3]), np.array([0, 1]), np.array([5]))
    res = evaluate(Flat(), cases, 5, EvalConfig(ties="average"), torch.device("cpu"))
    assert res.per_user["Recall@10"][0] == pytest.approx(10 / 40)
    assert res.per_user["NDCG@10"][0] == pytest.approx(np.mean([1 / math.log2(r + 1) for r in range(1, 11)]) * 10 / 40)


# ------------------------------------------------------------------ tables: cap flags


def _record(history: list[float], epochs: int, patience: int, stage: str = "finetune") -> dict:
    return {"spec": {"trainer": {stage: {"valid_metric": "Recall@20", "epochs": epochs, "patience": patience}}},
            "history": {stage: [{"Recall@20": v} for v in history]}}


def test_cap_flag_only_when_the_best_epoch_is_within_patience_of_the_cap():
    rising = [0.1 + 0.01 * i for i in range(10)]
    assert capped_stages(_record(rising, 10, 3)) == ["finetune"]  # still improving at the cap
    peaked = [0.1 + 0.01 * i for i in range(6)] + [0.1] * 4
    assert capped_stages(_record(peaked, 10, 3)) == []  # best at epoch 5 < 10 - 3
    assert capped_stages(_record(rising[:7], 10, 3)) == []  # stopped early: not at the cap
    late = [0.1] * 6 + [0.2] + [0.1] * 3  # best at epoch 6 = 10 - 3 + ... within the window
    assert capped_stages(_record(late, 10, 4)) == ["finetune"]
