"""MSM4SR components, losses against loop oracles, stages and checkpoint transfer (tiny, CPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import random_prefix_batch

from bench.features.item_features import ItemFeatures
from bench.nn.model import ModelContext
from bench.plugins import get_model_class
from msm4sr.augment import complementary_mixup, draw_ratios, mixup_mask, sequence_dropout
from msm4sr.config import MSM4SRConfig
from msm4sr.losses import cmcl_loss, nip_loss, same_target_pairs
from msm4sr.moe import MoEAdaptor
from msm4sr.pooling import AttentionPool

MAX_LEN = 8
DIM = 16


def make_model(n_items=30, seed=0, stage="finetune", dim=DIM, **cfg):
    cls = get_model_class("msm4sr")
    feats = ItemFeatures.random(n_items, dim=dim, seed=seed)
    ctx = ModelContext(n_items=n_items, max_len=MAX_LEN, train_item_counts=np.ones(n_items + 1), features=feats)
    torch.manual_seed(seed)
    model = cls(cls.Config(**cfg), ctx)
    model.set_stage(stage)
    return model


def prefix_batch(n_items=30, b=6, seed=0):
    return random_prefix_batch(n_items, b, MAX_LEN, seed)


# ---------------- augmentations ----------------


def test_mixup_swaps_exactly_the_masked_positions_in_both_sequences():
    g = torch.Generator().manual_seed(1)
    b, length, h = 5, 7, 4
    lengths = torch.tensor([7, 3, 1, 5, 2])
    zt, zv = torch.randn(b, length, h, generator=g), torch.randn(b, length, h, generator=g)
    mask = mixup_mask(lengths, length, torch.full((b,), 0.5), generator=g)
    real = torch.arange(length)[None] < lengths[:, None]
    assert not mask[~real].any(), "padding positions must never be swapped"
    assert mask.any() and (real & ~mask).any()
    mt, mv = complementary_mixup(zt, zv, mask)
    assert torch.equal(mt[mask], zv[mask]) and torch.equal(mv[mask], zt[mask])
    assert torch.equal(mt[~mask], zt[~mask]) and torch.equal(mv[~mask], zv[~mask])
    # ratio 1 swaps every real position and still nothing at padding
    full = mixup_mask(lengths, length, torch.ones(b), generator=g)
    assert torch.equal(full, real)


def test_ratio_scope_per_batch_vs_per_sequence():
    ref = torch.zeros(1)
    g = torch.Generator().manual_seed(0)
    per_batch = draw_ratios(6, 0.5, False, ref, g)
    per_seq = draw_ratios(6, 0.5, True, ref, g)
    assert per_batch.shape == per_seq.shape == (6,)
    assert torch.all(per_batch == per_batch[0]) and len(set(per_seq.tolist())) == 6
    assert torch.all((per_seq >= 0) & (per_seq < 0.5))


@pytest.mark.parametrize("keep_end", ["first", "last"])
def test_sequence_dropout_keeps_one_end_order_and_left_aligns(keep_end):
    g = torch.Generator().manual_seed(0)
    b, length = 64, 10
    lengths = torch.randint(1, length + 1, (b,), generator=g)
    seq = torch.arange(1, length + 1).repeat(b, 1) + 100 * torch.arange(b)[:, None]  # distinct ids
    seq = torch.where(torch.arange(length)[None] < lengths[:, None], seq, 0)
    end = 0 if keep_end == "first" else -1
    out, new_len = sequence_dropout(seq, lengths, torch.full((b,), 0.5), generator=g, keep_end=keep_end)
    dropped_any = False
    for r in range(b):
        orig = seq[r, : lengths[r]].tolist()
        kept = out[r, : new_len[r]].tolist()
        assert kept[end] == orig[end]
        assert all(x > 0 for x in kept) and not out[r, new_len[r] :].any(), "left-aligned, zero padding after"
        it = iter(orig)
        assert all(x in it for x in kept), "survivors keep their order"
        dropped_any |= len(kept) < len(orig)
    assert dropped_any
    same, same_len = sequence_dropout(seq, lengths, torch.zeros(b), generator=g, keep_end=keep_end)
    assert torch.equal(same, seq) and torch.equal(same_len, lengths)
    only_one, one = sequence_dropout(seq, lengths, torch.full((b,), 1.0), generator=g, keep_end=keep_end)
    survivor = seq[torch.arange(b), 0 if keep_end == "first" else lengths - 1]
    assert torch.all(one == 1) and torch.equal(only_one[:, 0], survivor) and not only_one[:, 1:].any()


# ---------------- item encoder ----------------


def test_zero_initialised_gate_weighs_experts_equally():
    moe = MoEAdaptor(dim=12, out=6, n_experts=4, dropout=0.0)
    e = torch.randn(5, 12)
    assert torch.allclose(moe.gates(e), torch.full((5, 4), 0.25))
    assert torch.allclose(moe(e), moe.experts(e).mean(-2), atol=1e-6)
    with torch.no_grad():
        moe.gate.normal_()
    assert not torch.allclose(moe.gates(e), torch.full((5, 4), 0.25))


def test_indexed_adaptor_equals_adapting_each_occurrence():
    torch.manual_seed(0)
    moe = MoEAdaptor(dim=12, out=6, n_experts=4, dropout=0.5)
    with torch.no_grad():
        moe.gate.normal_()
    e = torch.randn(5, 12)
    idx = torch.tensor([[0, 3, 3, 1], [4, 4, 2, 0]])
    moe.eval()
    assert torch.allclose(moe(e, idx), moe(e[idx]), atol=1e-6)
    moe.train()
    out = moe(e, idx)
    assert not torch.allclose(out[0, 1], out[0, 2]), "each occurrence draws its own dropout mask"


def test_attention_pooling_matches_two_linear_layers_and_masks_padded_slots():
    torch.manual_seed(0)
    pool = AttentionPool(8, 4, mask_padded=True)
    x = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    ref_logits = pool.w2(pool.w1(x)).squeeze(-1)  # W2 (W1 x + b1) + b2, no non-linearity
    assert torch.allclose(pool.slot_logits(x), ref_logits, atol=1e-5)
    a = torch.softmax(ref_logits[1], -1)
    assert torch.allclose(pool(x, mask)[1], (a[:, None] * x[1]).sum(0), atol=1e-5)
    x2 = x.clone()
    x2[0, 2:] = 100.0  # garbage in padded slots must not matter
    assert torch.allclose(pool(x2, mask)[0], pool(x, mask)[0], atol=1e-6)
    assert torch.equal(pool(x, mask)[2], torch.zeros(8)), "an item with no slot pools to zeros"
    quirk = AttentionPool(8, 4, mask_padded=False)
    quirk.load_state_dict(pool.state_dict())
    x0 = x * mask[..., None]  # real features are zero-padded: the quirk gives those zeros weight
    assert torch.allclose(pool(x0, mask)[0], pool(x, mask)[0], atol=1e-6)
    assert not torch.allclose(quirk(x0, mask)[0], pool(x0, mask)[0])


# ---------------- losses vs loop oracles ----------------


def _nip_oracle(views, items, targets, tau, mode):
    total = 0.0
    n = len(items)
    for i in range(n):
        num = den = 0.0
        for v in views:
            num += math.exp(float(v[i] @ items[i]) / tau)
            for j in range(n):
                if j != i and targets[j] == targets[i]:
                    den += 0.0 if mode == "mask" else 1.0  # exp(0)
                else:
                    den += math.exp(float(v[i] @ items[j]) / tau)
        total += -math.log(num / den)
    return total / n


def _cmcl_oracle(a, b, targets, tau, mode, form="ntxent"):
    def one(x, y, cross):  # anchor x_i, positive x_i.y_i, negatives cross(i, j) (j != i), x_i.x_j (j != i)
        total = 0.0
        n = len(x)
        for i in range(n):
            den = 0.0
            for j in range(n):
                for sim, is_self_view in ((cross(i, j), False), (float(x[i] @ x[j]), True)):
                    if j == i and is_self_view:
                        continue
                    if j != i and targets[j] == targets[i]:
                        den += 0.0 if mode == "mask" else 1.0
                    else:
                        den += math.exp(sim / tau)
            total += -(float(x[i] @ y[i]) / tau - math.log(den))
        return total / n

    first = one(a, b, lambda i, j: float(a[i] @ b[j]))
    if form == "ntxent":
        second = one(b, a, lambda i, j: float(b[i] @ a[j]))
    else:  # the released code: the second direction reuses the rows of a @ b.T
        second = one(b, a, lambda i, j: float(a[i] @ b[j]))
    return (first + second) / 2


def _unit(g, *shape):
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("mode", ["mask", "logit0"])
def test_nip_and_cmcl_equal_loop_oracles(mode):
    g = torch.Generator().manual_seed(3)
    targets = torch.tensor([4, 7, 4, 9, 2])
    same = same_target_pairs(targets)
    h, h2, z = _unit(g, 5, 6), _unit(g, 5, 6), _unit(g, 5, 6)
    tau = 0.07
    one_view = nip_loss([h], z, same, tau, mode)
    two_view = nip_loss([h, h2], z, same, tau, mode)
    assert one_view.item() == pytest.approx(_nip_oracle([h.numpy()], z.numpy(), targets.tolist(), tau, mode), rel=1e-9)
    assert two_view.item() == pytest.approx(
        _nip_oracle([h.numpy(), h2.numpy()], z.numpy(), targets.tolist(), tau, mode), rel=1e-9
    )
    for form in ("ntxent", "code"):
        c = cmcl_loss(h, h2, same, tau, mode, form)
        want = _cmcl_oracle(h.numpy(), h2.numpy(), targets.tolist(), tau, mode, form)
        assert c.item() == pytest.approx(want, rel=1e-9), form
    assert cmcl_loss(h, h2, same, tau, mode, "code").item() != pytest.approx(cmcl_loss(h, h2, same, tau, mode).item())


def test_nip_hand_computed_two_rows():
    # h = z = identity rows: s_ii = 1, s_ij = 0 -> loss = -log(e^(1/tau) / (e^(1/tau) + 1))
    h = torch.eye(2, dtype=torch.float64)
    tau = 0.5
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert nip_loss([h], h, same_target_pairs(torch.tensor([1, 2])), tau).item() == pytest.approx(expected)
    # same target: masked -> only the positive is left; logit0 -> e^0 = 1 is added
    same = same_target_pairs(torch.tensor([1, 1]))
    assert nip_loss([h], h, same, tau, "mask").item() == pytest.approx(0.0, abs=1e-12)
    assert nip_loss([h], h, same, tau, "logit0").item() == pytest.approx(expected)


def test_pretrain_objective_wires_weights_and_modalities():
    model = make_model(stage="pretrain", nip_weight=0.7, cmcl_weight=0.3)
    g = torch.Generator().manual_seed(5)
    targets = torch.tensor([3, 5, 3, 8])
    h = {m: torch.randn(4, 64, generator=g) for m in ("text", "image")}
    z = {m: torch.randn(4, 64, generator=g) for m in ("text", "image")}
    got = model.pretrain_objective(h, z, targets).item()
    n = {m: (h[m] / h[m].norm(dim=1, keepdim=True)).double().numpy() for m in h}
    zn = {m: (z[m] / z[m].norm(dim=1, keepdim=True)).double().numpy() for m in z}
    t = targets.tolist()
    nip = sum(_nip_oracle([n[m]], zn[m], t, 0.07, "mask") for m in ("text", "image"))
    want = 0.7 * nip + 0.3 * _cmcl_oracle(n["text"], n["image"], t, 0.07, "mask")
    assert got == pytest.approx(want, rel=1e-4)


# ---------------- model, stages, transfer ----------------


def test_stages_follow_the_pretrain_switch_and_stage_spec():
    m = make_model()
    assert m.stages == ("pretrain", "finetune") and m.sample_mode_for("pretrain") == "prefix"
    assert m.sample_mode_for("finetune") == "packed"
    assert type(m).needs_features(MSM4SRConfig(n_keywords=10, feature_params={"tagger": "efficientnet"})) == {
        "n_keywords": 10,
        "tagger": "efficientnet",
    }
    scratch = make_model(pretrain=False)
    assert scratch.stages == ("finetune",) and scratch.stage == "finetune"
    assert type(scratch).stages_for(MSM4SRConfig(pretrain=False)) == ("finetune",)
    with pytest.raises(ValueError):
        scratch.set_stage("pretrain")
    spec = m.stage_spec("pretrain")
    assert "id_embeddings" not in spec and "pretrain" not in spec and spec["cmcl_weight"] == 0.01
    assert make_model(id_embeddings=False).stage_spec("pretrain") == spec
    assert make_model(feature_params={"tagger": "efficientnet"}).stage_spec("pretrain") != spec
    assert make_model(tau=0.1).stage_spec("pretrain") != spec
    assert make_model(n_keywords=10).stage_spec("pretrain") != spec
    assert m.stage_spec("finetune") == MSM4SRConfig().model_dump()


def test_config_defaults_and_validation():
    c = MSM4SRConfig()
    assert (c.tau, c.cmcl_weight, c.nip_weight, c.proj, c.same_target, c.n_keywords) == (0.07, 0.01, 1.0, False, "mask", 15)
    assert c.modalities == ("text", "image") and c.ratio_scope == "batch" and c.mask_padded_slots and c.train_pooling
    assert MSM4SRConfig(modalities=["image", "text"]).modalities == ("text", "image")
    with pytest.raises(ValueError):
        MSM4SRConfig(modalities=[])
    with pytest.raises(ValueError):
        MSM4SRConfig(lam=0.1)  # extra fields are forbidden
    with pytest.raises(ValueError):
        MSM4SRConfig(feature_params={"n_keywords": 5})


def test_feature_tables_are_not_in_checkpoints_and_finetune_loads_everything_else():
    pre = make_model(stage="pretrain")
    opt = torch.optim.Adam(pre.parameters(), lr=1e-2)
    pre.loss(prefix_batch()).backward()
    opt.step()
    assert not any(k.startswith("feat_") for k in pre.state_dict())
    state = pre.transferable_state()
    assert not any(k.startswith(("feat_", "id_emb.")) for k in state)
    fine = make_model(stage="finetune", seed=1)  # other init, same data
    fine.load_transferable(state)
    for k, v in fine.state_dict().items():
        if k.startswith("id_emb."):
            assert not torch.equal(v, pre.state_dict()[k])
        else:
            assert torch.equal(v, state[k]), k
    fine.eval()
    b = prefix_batch()
    with torch.no_grad():
        s = fine.score(b["input"], b["lengths"])
    assert s.shape == (6, 31) and torch.isfinite(s).all()


def test_checkpoint_from_dataset_a_finetunes_on_dataset_b():
    pre = make_model(n_items=30, stage="pretrain")
    state = pre.transferable_state()
    fine = make_model(n_items=50, seed=7, stage="finetune")
    fine.load_transferable(state)
    assert fine.id_emb.weight.shape == (51, 64)
    opt = torch.optim.Adam(fine.parameters(), lr=1e-3)
    batch = prefix_batch(n_items=50)
    loss = fine.loss(batch)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    fine.eval()
    with torch.no_grad():
        assert fine.score(batch["input"], batch["lengths"]).shape == (6, 51)


def test_pretrain_scores_without_id_embeddings_and_cache_invalidates():
    m = make_model(stage="pretrain")
    m.eval()
    b = prefix_batch()
    with torch.no_grad():
        s1 = m.score(b["input"], b["lengths"])
        m.id_emb.weight.add_(1.0)  # ID table must not matter before fine-tuning
        m.clear_scoring_cache()
        assert torch.allclose(m.score(b["input"], b["lengths"]), s1, atol=1e-6)
        m.set_stage("finetune")
        s_ft = m.score(b["input"], b["lengths"])
    assert not torch.allclose(s_ft, s1)
    # the cached item table is reused in eval and rebuilt after train()
    with torch.no_grad():
        cached = m._cache["tables"]
        m.score(b["input"], b["lengths"])
        assert m._cache["tables"] is cached
        uncached = m._item_tables()
    assert torch.allclose(cached["text"][0], uncached["text"][0])
    m.train()
    assert m._cache is None
    m.eval()
    with torch.no_grad():
        for p in m.adaptor["text"].parameters():
            p.add_(0.1)
        m.train()
        m.eval()
        assert not torch.allclose(m.score(b["input"], b["lengths"]), s_ft)


def test_score_equals_cosine_sum_by_hand():
    m = make_model(stage="finetune")
    m.eval()
    b = prefix_batch()
    with torch.no_grad():
        s = m.score(b["input"], b["lengths"])
        want = 0
        for mod in ("text", "image"):
            z = m.adaptor[mod](m.pooled(mod)) + m.id_emb.weight
            out = m.encoder(m.adaptor[mod](m.pooled(mod, b["input"])) + m.id_emb(b["input"]))
            h = out[torch.arange(6), b["lengths"] - 1]
            want = want + torch.nn.functional.cosine_similarity(h[:, None], z[None], dim=-1)
    assert torch.allclose(s, want, atol=1e-5)


def test_packed_and_prefix_finetuning_losses_agree():
    m = make_model(stage="finetune")
    m.eval()  # no dropout: the two layouts must give the same mean CE
    seq = torch.tensor([[3, 8, 1, 5, 9, 0, 0, 0]])
    packed = {"input": seq[:, :], "target": torch.tensor([[8, 1, 5, 9, 0, 0, 0, 0]])}
    packed["input"] = torch.tensor([[3, 8, 1, 5, 0, 0, 0, 0]])
    rows, tgts = [], []
    for j in range(1, 5):
        r = torch.zeros(MAX_LEN, dtype=torch.long)
        r[:j] = seq[0, :j]
        t = torch.zeros(MAX_LEN, dtype=torch.long)
        t[j - 1] = seq[0, j]
        rows.append(r)
        tgts.append(t)
    prefix = {"input": torch.stack(rows), "target": torch.stack(tgts)}
    for bt in (packed, prefix):
        bt["lengths"] = (bt["input"] > 0).sum(1)
    with torch.no_grad():
        assert m.loss(packed).item() == pytest.approx(m.loss(prefix).item(), rel=1e-5)


@pytest.mark.parametrize(
    "cfg",
    [
        {},
        {"proj": True},
        {"modalities": ["text"]},
        {"modalities": ["image"], "proj": True},
        {"same_target": "logit0", "ratio_scope": "sequence", "mask_padded_slots": False},
        {"mixup": False, "item_dropout": False, "id_embeddings": False},
    ],
)
def test_loss_decreases_in_both_stages(cfg):
    for stage in ("pretrain", "finetune"):
        m = make_model(stage=stage, dropout=0.0, adaptor_dropout=0.0, **cfg)
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        batch = prefix_batch(b=8)
        losses = []
        for _ in range(15):
            opt.zero_grad()
            loss = m.loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 5.0)
            opt.step()
            losses.append(loss.item())
        assert all(math.isfinite(x) for x in losses)
        assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 1e-3, (stage, cfg, losses)


def test_frozen_pooling_gets_no_gradient():
    for train_pooling in (True, False):
        m = make_model(stage="pretrain", train_pooling=train_pooling)
        m.loss(prefix_batch()).backward()
        got = [p.grad is not None and p.grad.abs().sum() > 0 for p in m.pool.parameters()]
        assert all(got) if train_pooling else not any(got)
        assert m.adaptor["text"].weight.grad is not None


def test_parameter_count_at_768_matches_the_paper_scale():
    m = make_model(n_items=10, dim=768)

    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert count(m.pool["text"]) == 768 * 64 + 64 + 64 + 1  # 49,281 ~ 49 k
    assert 0.38e6 < count(m.adaptor["image"]) < 0.42e6  # 400,896 ~ 0.4 M
    assert 0.09e6 < count(m.encoder) < 0.11e6
    no_ids = count(m) - m.id_emb.weight.numel()
    assert 0.95e6 < no_ids < 1.05e6, no_ids
    assert m.id_emb.weight.numel() == 11 * 64


@pytest.mark.parametrize("mixup,item_dropout", [(True, True), (False, False), (True, False)])
def test_augmentations_run_only_when_switched_on_and_only_in_pretraining(monkeypatch, mixup, item_dropout):
    import msm4sr.model as mm

    calls = {"mix": 0, "drop": 0}
    real_mix, real_drop = mm.complementary_mixup, mm.sequence_dropout

    def spy_mix(*a, **k):
        calls["mix"] += 1
        return real_mix(*a, **k)

    def spy_drop(*a, **k):
        calls["drop"] += 1
        return real_drop(*a, **k)

    monkeypatch.setattr(mm, "complementary_mixup", spy_mix)
    monkeypatch.setattr(mm, "sequence_dropout", spy_drop)
    m = make_model(stage="pretrain", mixup=mixup, item_dropout=item_dropout)
    m.loss(prefix_batch())
    assert calls == {"mix": int(mixup), "drop": int(item_dropout)}
    m.set_stage("finetune")
    m.loss(prefix_batch())
    assert calls == {"mix": int(mixup), "drop": int(item_dropout)}
    text_only = make_model(stage="pretrain", modalities=["text"])
    text_only.loss(prefix_batch())
    assert calls["mix"] == int(mixup), "one modality: nothing to mix"


def test_losses_and_scores_hold_up_under_bf16_autocast():
    for stage in ("pretrain", "finetune"):
        m = make_model(stage=stage)
        m.eval()  # no augmentation/dropout: the two precisions see the same function
        b = prefix_batch()
        with torch.no_grad():
            ref = m.loss(b).item()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = m.loss(b).item()
                s = m.score(b["input"], b["lengths"])
        assert s.dtype == torch.float32 and s.shape == (6, 31)
        assert low == pytest.approx(ref, rel=0.05, abs=0.05)


def test_trainer_defaults_validate_and_pretraining_rejects_packed_rows():
    from bench.engine.trainer import TrainerConfig

    cls = get_model_class("msm4sr")
    for stage in cls.stages:
        TrainerConfig(**cls.trainer_defaults[stage])
    m = make_model(stage="pretrain")
    packed = {"input": torch.tensor([[3, 8, 1, 0]]), "target": torch.tensor([[8, 1, 5, 0]])}
    packed["lengths"] = torch.tensor([3])
    with pytest.raises(ValueError, match="prefix"):
        m.loss(packed)
