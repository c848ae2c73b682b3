"""Baselines I: each model trains on a tiny real slice, scores every item, and keeps its
model-specific invariants (augmentations never alias the batch, BERT4Rec's masking, ...)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import fit_steps

from bench.engine.batching import make_rows
from bench.features.item_features import ItemFeatures
from bench.nn.model import ModelContext
from bench.plugins import get_model_class
from protocols import PROTOCOLS
from protocols.base import TrainSequences

REPO = Path(__file__).resolve().parents[1]
MAX_LEN = 20
USERS = 300
TINY = {"hidden": 32, "ffn": 64}  # shrink the Transformers so the suite stays fast on 2 cores
NAMES = ["gru4rec", "sasrec_bce", "bert4rec", "cl4srec", "duorec", "s3rec"]


@pytest.fixture(scope="module")
def real_slice(tmp_path_factory):
    from bench.data.catalog import load_dataset

    root = Path(os.environ.get("BENCH_DATA_ROOT", REPO.parent / "shared" / "data"))
    if not (root / "amazon18_scientific_unisrec").is_dir():
        pytest.skip(f"scientific data not found under {root} (set BENCH_DATA_ROOT)")
    ds = load_dataset("scientific", root, tmp_path_factory.mktemp("cache"))
    proto = PROTOCOLS.get("leave_one_out")
    split = proto(proto.Config(max_len=MAX_LEN)).split(ds)
    tr = split.train
    train = TrainSequences(tr.offsets[: USERS + 1].copy(), tr.items[: tr.offsets[USERS]].copy())
    ctx = ModelContext(split.n_items, MAX_LEN, train.item_counts(split.n_items))
    return train, ctx


def build(name, ctx, **overrides):
    cls = get_model_class(name)
    fields = cls.Config.model_fields
    cfg = cls.Config(**{k: v for k, v in {**TINY, **overrides}.items() if k in fields})
    return cls(cfg, ctx)


def batch_of(train, mode, n=64, start=0, trim=True):
    """Rows as the trainer gives them: trailing all-padding columns dropped (trim)."""
    inp, tgt = make_rows(train, MAX_LEN, mode)
    inp, tgt = inp[start : start + n], tgt[start : start + n]
    lengths = (inp > 0).sum(1)
    width = int(lengths.max()) if trim else MAX_LEN
    return {"input": inp[:, :width], "target": tgt[:, :width], "lengths": lengths}


def clone(batch):
    return {k: v.clone() for k, v in batch.items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --- every model -------------------------------------------------------------------------------


def test_labels_and_defaults():
    # labels, search spaces and unknown fields of every registered model: tests/test_conformance.py
    assert get_model_class("gru4rec").label == "GRU4Rec (CE)"
    assert get_model_class("sasrec_bce").label == "SASRec (BCE)"
    g = get_model_class("gru4rec").Config()
    assert (g.embedding, g.hidden, g.layers, g.dropout) == (64, 128, 1, 0.3)
    b = get_model_class("bert4rec").Config()
    assert (b.hidden, b.layers, b.heads, b.ffn, b.dropout, b.mask_ratio) == (64, 2, 2, 256, 0.2, 0.2)
    c = get_model_class("cl4srec").Config()
    assert (c.crop_eta, c.mask_gamma, c.reorder_beta, c.cl_weight, c.tau) == (0.6, 0.3, 0.6, 0.1, 1.0)
    d = get_model_class("duorec").Config()
    assert (d.cl_weight, d.tau, d.dropout) == (0.1, 1.0, 0.5)
    s = get_model_class("s3rec").Config()
    assert (s.mask_ratio, s.aap_weight, s.mip_weight, s.map_weight, s.sp_weight) == (0.2, 0.2, 1.0, 1.0, 0.5)


@pytest.mark.parametrize("name", NAMES)
def test_loss_decreases_and_scores_all_items(name, real_slice):
    train, ctx = real_slice
    torch.manual_seed(0)
    model = build(name, ctx)
    for stage in model.stages:
        model.set_stage(stage)
        batch = batch_of(train, model.sample_mode_for(stage))
        before = clone(batch)
        losses = fit_steps(model, batch)
        assert all(np.isfinite(losses)), (stage, losses)
        assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), (stage, losses)
        assert_same(batch, before)  # loss() never writes into the batch
        model.eval()
        with torch.no_grad():
            scores = model.score(batch["input"][:7], batch["lengths"][:7])
        assert scores.shape == (7, ctx.n_items + 1)
        assert torch.isfinite(scores[:, 1:]).all()


# --- SASRec (BCE) ------------------------------------------------------------------------------


def test_sasrec_bce_negatives_never_equal_target():
    from baselines.seqops import sample_negatives

    torch.manual_seed(1)
    pos = torch.randint(1, 6, (20000,))
    neg = sample_negatives(pos, 5)
    assert (neg != pos).all() and neg.min() >= 1 and neg.max() <= 5
    counts = torch.bincount(neg[pos == 3], minlength=6)[1:]  # uniform over the 4 others
    assert counts[2] == 0 and (counts[[0, 1, 3, 4]].float() / counts.sum() - 0.25).abs().max() < 0.03


# --- BERT4Rec -----------------------------------------------------------------------------------


def test_append_item_puts_mask_after_last_item_and_drops_oldest_when_full():
    from baselines.seqops import append_item

    seq = torch.tensor([[3, 4, 0, 0], [5, 6, 7, 8], [9, 0, 0, 0]])
    out, n = append_item(seq, torch.tensor([2, 4, 1]), 99, max_len=4)
    assert out.tolist() == [[3, 4, 99, 0], [6, 7, 8, 99], [9, 99, 0, 0]]
    assert n.tolist() == [3, 4, 2]
    assert seq.tolist() == [[3, 4, 0, 0], [5, 6, 7, 8], [9, 0, 0, 0]]
    # a batch trimmed to its longest row grows by one column instead of dropping items
    out, n = append_item(seq, torch.tensor([2, 4, 1]), 99, max_len=6)
    assert out.tolist() == [[3, 4, 99, 0, 0], [5, 6, 7, 8, 99], [9, 99, 0, 0, 0]]
    assert n.tolist() == [3, 5, 2]


def test_bert4rec_sequence_rebuild_mask_rate_and_last_item_samples(real_slice):
    from baselines.seqops import full_sequence

    train, ctx = real_slice
    model = build("bert4rec", ctx)
    packed = batch_of(train, "packed", n=USERS)
    seq, lengths = full_sequence(packed, MAX_LEN)
    # the sequence is the window's inputs followed by its final target
    for i in range(20):
        n = int(packed["lengths"][i])
        want = torch.cat([packed["input"][i, :n], packed["target"][i, n - 1 : n]])[-MAX_LEN:]
        assert seq[i, : len(want)].tolist() == want.tolist() and int(lengths[i]) == len(want)
    torch.manual_seed(0)
    big = seq.repeat(40, 1)
    big_len = lengths.repeat(40)
    masked, labels = model.cloze(big, big_len)
    b = len(big)
    assert len(masked) == 2 * b  # every row also appears once with only its last item masked
    real = torch.arange(MAX_LEN).unsqueeze(0) < big_len.unsqueeze(1)
    rate = (labels[:b] > 0).sum() / real.sum()
    assert abs(rate.item() - 0.2) < 0.01
    assert ((masked[:b] == model.mask_id) == (labels[:b] > 0)).all()
    assert torch.equal(labels[:b][labels[:b] > 0], big[labels[:b] > 0])
    last = labels[b:]
    assert ((last > 0).sum(1) == 1).all()
    assert torch.equal(
        last.gather(1, (big_len - 1).unsqueeze(1)).squeeze(1),
        big.gather(1, (big_len - 1).unsqueeze(1)).squeeze(1),
    )


def test_bert4rec_scores_at_the_appended_mask(real_slice):
    train, ctx = real_slice
    model = build("bert4rec", ctx).eval()
    seen = {}
    model.encoder.register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    hist = torch.tensor([[3, 4, 0] + [0] * (MAX_LEN - 3), list(range(1, MAX_LEN + 1))])
    with torch.no_grad():
        model.score(hist, torch.tensor([2, MAX_LEN]))
    mask_vec = model.item_emb.weight[model.mask_id]
    x = seen["x"]
    assert torch.equal(x[0, 2], mask_vec) and torch.equal(x[1, MAX_LEN - 1], mask_vec)
    assert torch.equal(x[1, 0], model.item_emb.weight[2])  # oldest item dropped
    with torch.no_grad():  # a trimmed history gets one more column
        model.score(torch.tensor([[3, 4, 5], [6, 0, 0]]), torch.tensor([3, 1]))
    x = seen["x"]
    assert x.shape[1] == 4 and torch.equal(x[0, 3], mask_vec) and torch.equal(x[1, 1], mask_vec)


# --- CL4SRec ------------------------------------------------------------------------------------


def test_cl4srec_augmentations(real_slice):
    from baselines.seqops import crop, mask_items, reorder

    train, ctx = real_slice
    model = build("cl4srec", ctx)
    batch = batch_of(train, "prefix", n=256, start=500)
    before = clone(batch)
    torch.manual_seed(0)
    v1, n1 = model.augment(batch["input"], batch["lengths"])
    v2, n2 = model.augment(batch["input"], batch["lengths"])
    assert_same(batch, before)
    assert not torch.equal(v1, v2)
    v1[:] = 0  # writing into a view leaves the source intact
    assert_same(batch, before)
    seq, n = batch["input"], batch["lengths"]
    c, cn = crop(seq, n, 0.6)
    assert torch.equal(cn, torch.clamp((0.6 * n).floor().long(), min=1))
    assert torch.equal((c > 0).sum(1), cn)
    m, _ = mask_items(seq, n, 0.3, model.mask_id)
    assert torch.equal((m == model.mask_id).sum(1), (0.3 * n.float()).floor().long())
    r, _ = reorder(seq, n, 0.6)
    assert torch.equal(r.sort(1).values, seq.sort(1).values) and not torch.equal(r, seq)
    for i in range(20):  # a crop is a contiguous run of the source
        s, k = seq[i, : n[i]].tolist(), int(cn[i])
        assert any(s[j : j + k] == c[i, :k].tolist() for j in range(len(s) - k + 1))


# --- DuoRec -------------------------------------------------------------------------------------


def test_duorec_supervised_positive_shares_the_target(real_slice):
    from baselines.duorec import supervised_partner
    from baselines.seqops import last_target

    train, ctx = real_slice
    inp, tgt = make_rows(train, MAX_LEN, "prefix")
    target = tgt.max(1).values
    torch.manual_seed(0)
    # in-batch partners
    partner, found = supervised_partner(target)
    assert found.any() and not found.all()
    assert torch.equal(target[partner], target)
    idx = torch.arange(len(target))
    assert (partner[found] != idx[found]).all() and torch.equal(partner[~found], idx[~found])
    dup = torch.tensor([7, 7, 7, 2, 9, 9])
    picks = torch.stack([supervised_partner(dup)[0] for _ in range(200)])
    assert set(picks[:, 0].tolist()) == {1, 2} and (picks[:, 3] == 3).all()
    # the bank: positives come from earlier batches too, share the target, differ from the row
    model = build("duorec", ctx, positive_bank=1000)
    rates = []
    for lo in range(0, 1024, 128):
        batch = batch_of(train, "prefix", n=128, start=lo)
        before = clone(batch)
        pos, found, pos_target = model.positives(batch)
        assert_same(batch, before)
        assert torch.equal(pos_target, last_target(batch))
        own = torch.nn.functional.pad(batch["input"], (0, MAX_LEN - batch["input"].size(1)))
        pos = torch.nn.functional.pad(pos, (0, MAX_LEN - pos.size(1)))
        assert (pos[found] != own[found]).any(1).all()
        assert torch.equal(pos[~found], own[~found])
        assert all(
            model.bank.target[model.bank.seq.long().eq(p).all(1)].eq(t).any()
            for p, t in zip(pos[found][:10], pos_target[found][:10])
        )
        rates.append(found.float().mean().item())
    assert rates[-1] > rates[0]  # the bank finds more partners than the first batch alone
    resumed = build("duorec", ctx, positive_bank=1000)
    resumed.load_state_dict(model.state_dict())  # the bank is checkpointed with the weights
    probe = batch_of(train, "prefix", n=128, start=1024)
    torch.manual_seed(5)
    want = model.positives(probe)
    torch.manual_seed(5)
    got = resumed.positives(probe)
    assert all(torch.equal(a, b) for a, b in zip(want, got))
    batch = batch_of(train, "prefix", n=256)
    before = clone(batch)
    model.loss(batch).backward()
    assert_same(batch, before)


# --- S3-Rec -------------------------------------------------------------------------------------


def test_s3rec_attributes_stages_and_transfer(real_slice):
    from baselines.s3rec import item_attributes

    train, ctx = real_slice
    cls = get_model_class("s3rec")
    cfg = cls.Config(**TINY, n_attributes=8)
    popular = item_attributes(ctx, cfg)
    assert popular.shape == (ctx.n_items + 1, 1) and popular[0, 0] == 0
    assert set(popular[1:, 0].tolist()) == set(range(1, 11))
    counts = torch.as_tensor(ctx.train_item_counts)
    assert counts[popular[:, 0] == 10].min() >= counts[popular[:, 0] == 1].max()

    feats = ItemFeatures.random(ctx.n_items, dim=16, seed=3)
    fctx = ModelContext(ctx.n_items, MAX_LEN, ctx.train_item_counts, features=feats)
    a1, a2 = item_attributes(fctx, cfg), item_attributes(fctx, cfg)
    assert torch.equal(a1, a2)  # deterministic
    assert a1.shape == (ctx.n_items + 1, 1) and (a1[1:, 0] >= 1).all() and a1[1:, 0].max() <= 8
    both = item_attributes(fctx, cls.Config(**TINY, n_attributes=8, attributes="text_image"))
    assert torch.equal(both[:, :1], a1)
    a1 = both
    has_image = feats.image_mask[1:].any(1)
    assert (a1[1:, 1][has_image] > 8).all() and (a1[1:, 1][~has_image] == 0).all()

    assert cls.needs_features(cfg)["image_kind"] == "none"
    assert cls.needs_features(cls.Config(attributes="popularity")) is None
    assert cls.stages_for(cls.Config(pretrain=False)) == ("finetune",)
    assert cls(cls.Config(**TINY, pretrain=False), ctx).stages == ("finetune",)

    pre = cls(cfg, fctx)
    assert pre.attribute_source == "text"
    pre.set_stage("pretrain")
    assert not pre.encoder.causal and pre.sample_mode_for("pretrain") == "prefix"
    spec = pre.stage_spec("pretrain")
    assert spec["mask_ratio"] == 0.2 and set(spec) <= set(pre.stage_spec("finetune"))
    batch = batch_of(train, "prefix")
    pre.loss(batch).backward()
    masked, pos, neg = pre.segment_parts(*_seq(batch))
    seq, lengths, real = _seq(batch)
    seg = (masked == pre.mask_id) & (seq != pre.mask_id)
    assert torch.equal(pos[seg], seq[seg]) and (pos[real & ~seg] == pre.mask_id).all()
    assert (neg[real & ~seg] == pre.mask_id).all() and (seg.sum(1) >= 1).all()
    assert (seg.sum(1) <= lengths // 2).all()

    fine = cls(cfg, fctx)
    fine.set_stage("finetune")
    fine.load_transferable(pre.transferable_state())
    assert fine.encoder.causal
    assert torch.equal(fine.item_emb.weight, pre.item_emb.weight)


def _seq(batch):
    from baselines.seqops import full_sequence, real_mask

    seq, lengths = full_sequence(batch, MAX_LEN)
    return seq, lengths, real_mask(seq, lengths)
