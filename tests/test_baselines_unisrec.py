"""UniSRec: parametric-whitening MoE, noisy gating, pre-training losses, encoder freezing,
inductive / transductive fine-tuning and cross-dataset transfer (tiny, random features, CPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import random_prefix_batch

import baselines.unisrec  # noqa: F401
from baselines.unisrec import ParametricWhiteningMoE, UniSRec, UniSRecConfig
from bench.engine.trainer import TrainerConfig, make_optimizer
from bench.features.item_features import ItemFeatures
from bench.nn.model import ModelContext
from bench.plugins import MODELS, get_model_class

MAX_LEN = 8
DIM = 16
TINY = {"hidden": 32, "ffn": 64}


def make_model(n_items=30, seed=0, stage="finetune", **cfg):
    feats = ItemFeatures.random(n_items, dim=DIM, seed=seed)
    ctx = ModelContext(
        n_items=n_items, max_len=MAX_LEN, train_item_counts=np.ones(n_items + 1), features=feats
    )
    torch.manual_seed(seed)
    model = UniSRec(UniSRecConfig(**{**TINY, **cfg}), ctx)
    model.set_stage(stage)
    return model


def prefix_batch(n_items=30, b=8, seed=0):
    return random_prefix_batch(n_items, b, MAX_LEN, seed, min_len=2)


def packed_batch(n_items=30, b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, MAX_LEN + 1, (b,), generator=g)
    full = torch.randint(1, n_items + 1, (b, MAX_LEN + 1), generator=g)
    cols = torch.arange(MAX_LEN)[None]
    inp = torch.where(cols < lengths[:, None], full[:, :MAX_LEN], 0)
    tgt = torch.where(cols < lengths[:, None], full[:, 1:], 0)
    return {"input": inp, "target": tgt, "lengths": lengths}


def steps(model, batch, n=5, lr=1e-2):
    """Train as the trainer does: the optimizer only holds parameters that require grad."""
    opt = make_optimizer(model, TrainerConfig(lr=lr))
    model.train()
    losses = []
    for _ in range(n):
        opt.zero_grad(set_to_none=True)
        loss = model.loss(batch)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


# ---------------- registry, config, stages ----------------


def test_registered_with_defaults_stages_and_specs():
    assert get_model_class("unisrec") is UniSRec and MODELS.get("unisrec").label == "UniSRec"
    c = UniSRecConfig()
    assert (c.hidden, c.layers, c.heads, c.ffn, c.dropout) == (64, 2, 2, 256, 0.5)
    assert (c.n_experts, c.adaptor_dropout, c.item_drop, c.lam, c.tau) == (8, 0.2, 0.2, 1e-3, 0.07)
    assert c.modalities == ("text",) and c.mode == "transductive" and c.freeze_encoder and c.pretrain
    assert UniSRecConfig(modalities=["image", "text"]).modalities == ("text", "image")
    with pytest.raises(ValueError):
        UniSRecConfig(modalities=[])
    with pytest.raises(ValueError):
        UniSRecConfig(lambda_=0.1)  # extra fields are forbidden
    assert set(UniSRecConfig.search_space()) <= set(UniSRecConfig.model_fields)
    for stage in UniSRec.stages:
        TrainerConfig(**UniSRec.trainer_defaults[stage])
    assert UniSRec.trainer_defaults["pretrain"]["lr"] == UniSRec.trainer_defaults["finetune"]["lr"] == 1e-3

    m = make_model()
    assert m.stages == ("pretrain", "finetune") and m.sample_mode_for("pretrain") == "prefix"
    assert m.sample_mode_for("finetune") == "packed"
    assert UniSRec.stages_for(UniSRecConfig(pretrain=False)) == ("finetune",)
    scratch = make_model(pretrain=False)
    assert scratch.stages == ("finetune",)
    with pytest.raises(ValueError):
        scratch.set_stage("pretrain")

    assert UniSRec.needs_features(c)["image_kind"] == "none"  # text only: no tagger needed
    assert UniSRec.needs_features(UniSRecConfig(modalities=("text", "image"), n_keywords=10)) == {
        "n_keywords": 10
    }
    spec = m.stage_spec("pretrain")
    assert not {"mode", "freeze_encoder", "pretrain"} & set(spec)
    assert make_model(mode="inductive", freeze_encoder=False).stage_spec("pretrain") == spec
    assert make_model(lam=0.01).stage_spec("pretrain") != spec
    assert make_model(modalities=("text", "image")).stage_spec("pretrain") != spec
    assert m.stage_spec("finetune") != make_model(mode="inductive").stage_spec("finetune")


# ---------------- the adaptor ----------------


def test_parametric_whitening_expert_equals_w_times_x_minus_b():
    torch.manual_seed(0)
    moe = ParametricWhiteningMoE(dim=6, out=4, n_experts=3, dropout=0.3)
    with torch.no_grad():
        moe.bias.normal_()
        moe.w_gate.normal_()
    moe.eval()
    x = torch.randn(5, 6)
    ex = moe.experts(x)
    assert ex.shape == (5, 3, 4)
    for k in range(3):
        assert torch.allclose(ex[:, k], (x - moe.bias[k]) @ moe.weight[k].T, atol=1e-6)
        assert not torch.allclose(ex[:, k], x @ moe.weight[k].T - moe.bias[k, :4], atol=1e-3)
    g = torch.softmax(x @ moe.w_gate, -1)
    want = sum(g[:, k : k + 1] * (x - moe.bias[k]) @ moe.weight[k].T for k in range(3))
    assert torch.allclose(moe(x), want, atol=1e-6)
    assert not any(n.endswith("lin.bias") for n, _ in moe.named_parameters())  # no bias after W

    # the training branch (dropout on x, then the bias): a vanishing dropout leaves W (x - b)
    moe.p = 1e-9
    moe.train()
    assert torch.allclose(moe.experts(x), ex, atol=1e-6)
    # training: every expert draws its own dropout mask on x
    same = ParametricWhiteningMoE(dim=64, out=64, n_experts=2, dropout=0.5)
    with torch.no_grad():
        same.weight.copy_(torch.eye(64).expand(2, 64, 64))
    same.train()
    y = same.experts(torch.ones(3, 64))
    assert ((y == 0) | (y == 2)).all() and not torch.equal(y[:, 0], y[:, 1])


def test_noisy_gate_only_in_training():
    torch.manual_seed(0)
    moe = ParametricWhiteningMoE(dim=8, out=4, n_experts=4, dropout=0.0)
    with torch.no_grad():
        moe.w_gate.normal_()
    x = torch.randn(6, 8)
    clean = torch.softmax(x @ moe.w_gate, -1)
    moe.eval()
    assert torch.equal(moe.gates(x), moe.gates(x)) and torch.allclose(moe.gates(x), clean, atol=1e-6)
    assert torch.equal(moe(x), moe(x))
    moe.train()
    a, b = moe.gates(x), moe.gates(x)
    assert not torch.allclose(a, b) and not torch.allclose(a, clean)
    assert torch.allclose(a.sum(-1), torch.ones(6), atol=1e-6)
    # the noise scale is softplus(x W_noise) + 1e-2: x W_noise = -80 leaves only the 1e-2 floor
    ones = torch.ones(6, 8)
    with torch.no_grad():
        moe.w_noise.fill_(-10.0)
    calm = torch.softmax(ones @ moe.w_gate, -1)
    assert torch.allclose(moe.gates(ones), calm, atol=0.05) and not torch.equal(moe.gates(ones), calm)


# ---------------- pre-training ----------------


def _contrastive_oracle(a, b, targets, tau):
    """-log(e^{a_i.b_i/tau} / sum_j e^{l_ij}), l_ij = 0 for j != i sharing i's target (the code)."""
    total = 0.0
    for i in range(len(a)):
        den = 0.0
        for j in range(len(a)):
            same = j != i and targets[j] == targets[i]
            den += 1.0 if same else math.exp(float(a[i] @ b[j]) / tau)
        total += -(float(a[i] @ b[i]) / tau - math.log(den))
    return total / len(a)


def test_pretrain_loss_equals_hand_computation_and_decreases():
    m = make_model(stage="pretrain", lam=0.5)
    m.eval()  # no dropout / gate noise: the loss is a function of the batch and the view
    batch = prefix_batch()
    torch.manual_seed(3)
    aug, aug_len = m.seq_seq_view(batch["input"], batch["lengths"])
    torch.manual_seed(3)
    with torch.no_grad():
        got = m.loss(batch).item()
        h = torch.nn.functional.normalize(m.encode(batch["input"], batch["lengths"]), dim=-1).double()
        target = batch["target"].gather(1, (batch["lengths"] - 1)[:, None]).squeeze(1)
        z = torch.nn.functional.normalize(m.item_reps(target), dim=-1).double()
        h2 = torch.nn.functional.normalize(m.encode(aug, aug_len), dim=-1).double()
    t = target.tolist()
    want_si, want_ss = _contrastive_oracle(h, z, t, 0.07), _contrastive_oracle(h, h2, t, 0.07)
    assert m.loss_parts["seq_item"].item() == pytest.approx(want_si, rel=1e-4)
    assert m.loss_parts["seq_seq"].item() == pytest.approx(want_ss, rel=1e-4)
    assert got == pytest.approx(want_si + 0.5 * want_ss, rel=1e-4)

    m = make_model(stage="pretrain", dropout=0.0)
    losses = steps(m, prefix_batch(b=16), n=20, lr=3e-3)
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, losses
    packed = packed_batch()
    with pytest.raises(ValueError, match="prefix"):
        m.loss(packed)


def test_seq_seq_view_drops_items_and_never_touches_the_batch():
    m = make_model(stage="pretrain", item_drop=0.5)
    batch = prefix_batch(b=32, seed=4)
    before = {k: v.clone() for k, v in batch.items()}
    torch.manual_seed(0)
    aug, aug_len = m.seq_seq_view(batch["input"], batch["lengths"])
    assert aug.data_ptr() != batch["input"].data_ptr() and aug_len.data_ptr() != batch["lengths"].data_ptr()
    aug.fill_(-1)  # writing the view must not reach the batch
    aug_len.fill_(-1)
    torch.manual_seed(0)
    aug, aug_len = m.seq_seq_view(batch["input"], batch["lengths"])
    dropped = False
    for r in range(32):
        orig = batch["input"][r, : batch["lengths"][r]].tolist()
        kept = aug[r, : aug_len[r]].tolist()
        assert kept[0] == orig[0] and not aug[r, aug_len[r] :].any()
        it = iter(orig)
        assert all(x in it for x in kept)  # an ordered sub-sequence of the input
        dropped |= len(kept) < len(orig)
    assert dropped
    m.train()
    m.loss(batch).backward()
    for k in batch:
        assert torch.equal(batch[k], before[k]), k


# ---------------- fine-tuning ----------------


def _frozen(m):
    return [p for part in m.frozen_parts() for p in part.parameters()]


@pytest.mark.parametrize("freeze", [True, False])
def test_finetune_freezes_the_encoder_only_when_asked(freeze):
    pre = make_model(stage="pretrain", freeze_encoder=freeze)
    assert all(p.requires_grad for p in pre.parameters()), "nothing is frozen in pre-training"
    m = make_model(stage="finetune", freeze_encoder=freeze, dropout=0.0)
    m.load_transferable(pre.transferable_state())
    frozen_before = [p.detach().clone() for p in _frozen(m)]
    adaptor_before = m.adaptor["text"].weight.detach().clone()
    norm_before = m.encoder.norm.weight.detach().clone()
    steps(m, packed_batch(), n=3)
    assert not torch.equal(m.adaptor["text"].weight, adaptor_before)
    assert not torch.equal(m.encoder.norm.weight, norm_before), (
        "the input LayerNorm trains (the code's fix_enc)"
    )
    changed = [not torch.equal(p, q) for p, q in zip(_frozen(m), frozen_before)]
    if freeze:
        assert all(not p.requires_grad and p.grad is None for p in _frozen(m))
        assert not any(changed)
        assert m.id_emb.weight.requires_grad
    else:
        assert all(p.requires_grad for p in _frozen(m)) and any(changed)
    m.set_stage("pretrain")
    assert all(p.requires_grad for p in m.parameters())
    # without pre-training there is nothing to keep: a scratch model trains its encoder
    scratch = make_model(pretrain=False, freeze_encoder=freeze)
    assert all(p.requires_grad for p in scratch.parameters())


def test_inductive_has_no_id_table_and_scores_follow_the_text():
    m = make_model(mode="inductive")
    assert m.id_emb is None and not any(k.startswith("id_emb") for k in m.state_dict())
    assert not any(k.startswith("feat_") for k in m.state_dict())
    m.eval()
    b = prefix_batch()
    hist_items = set(b["input"].unique().tolist())
    outsider = next(i for i in range(1, 31) if i not in hist_items)
    with torch.no_grad():
        s1 = m.score(b["input"], b["lengths"])
        m.feat_text[outsider] = m.feat_text[outsider] + 3.0
        s2 = m.score(b["input"], b["lengths"])
        m.feat_text[outsider + 0] = m.feat_text[1]  # same text as item 1 -> the same score
        s3 = m.score(b["input"], b["lengths"])
    assert not torch.allclose(s2[:, outsider], s1[:, outsider])
    others = [i for i in range(31) if i != outsider]
    assert torch.allclose(s2[:, others], s1[:, others], atol=1e-6)
    assert torch.allclose(s3[:, outsider], s3[:, 1], atol=1e-6)
    # transductive: the same text, distinct IDs -> distinct scores
    t = make_model(mode="transductive")
    t.eval()
    with torch.no_grad():
        t.feat_text[outsider] = t.feat_text[1]
        st = t.score(b["input"], b["lengths"])
    assert not torch.allclose(st[:, outsider], st[:, 1], atol=1e-4)


def test_score_is_cosine_by_hand_and_the_cache_follows_updates():
    for cfg in ({}, {"modalities": ("image",)}, {"modalities": ("text", "image")}):
        m = make_model(**cfg)
        m.eval()
        b = prefix_batch()
        with torch.no_grad():
            s = m.score(b["input"], b["lengths"])
            z = sum(m.adaptor[mod](getattr(m, f"feat_{mod}")) for mod in m.modalities) + m.id_emb.weight
            out = m.encoder(z[b["input"]])
            h = out[torch.arange(len(b["lengths"])), b["lengths"] - 1]
            want = torch.nn.functional.cosine_similarity(h[:, None], z[None], dim=-1)
        assert s.shape == (8, 31) and torch.isfinite(s).all()
        assert torch.allclose(s, want, atol=1e-5), cfg
    with torch.no_grad():
        m.adaptor["image"].bias.add_(0.5)  # an in-place update must invalidate the cached table
        assert not torch.allclose(m.score(b["input"], b["lengths"]), s, atol=1e-4)
    m.set_stage("pretrain")  # no ID embeddings before fine-tuning
    with torch.no_grad():
        sp = m.score(b["input"], b["lengths"])
        m.id_emb.weight.add_(1.0)
        assert torch.allclose(m.score(b["input"], b["lengths"]), sp, atol=1e-6)


def test_finetune_loss_is_ce_over_cosines_and_trains_in_both_modes():
    m = make_model(dropout=0.0)
    m.eval()
    b = packed_batch()
    with torch.no_grad():
        z = m.item_reps()
        out = m.encoder(z[b["input"]])[b["target"] > 0]
        cos = torch.nn.functional.cosine_similarity(out[:, None], z[None, 1:], dim=-1)
        want = torch.nn.functional.cross_entropy(cos / 0.07, b["target"][b["target"] > 0] - 1)
        assert m.loss(b).item() == pytest.approx(want.item(), rel=1e-4)
    for mode in ("inductive", "transductive"):
        m = make_model(mode=mode, dropout=0.0, freeze_encoder=False)
        losses = steps(m, packed_batch(), n=15, lr=3e-3)
        assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, (mode, losses)


def test_transductive_transfer_to_a_dataset_with_more_items():
    pre = make_model(n_items=30, stage="pretrain")
    steps(pre, prefix_batch(n_items=30), n=2)
    state = pre.transferable_state()
    assert not any(k.startswith(("id_emb.", "feat_")) for k in state)
    assert any(k.startswith("adaptor.") for k in state) and any(k.startswith("encoder.") for k in state)
    fine = make_model(n_items=50, seed=7, stage="finetune")
    fine.load_transferable(state)
    for k, v in fine.state_dict().items():
        if not k.startswith("id_emb."):
            assert torch.equal(v, state[k]), k
    assert fine.id_emb.weight.shape == (51, 32)
    batch = packed_batch(n_items=50)
    losses = steps(fine, batch, n=2)
    assert all(math.isfinite(x) for x in losses)
    fine.eval()
    with torch.no_grad():
        s = fine.score(batch["input"], batch["lengths"])
    assert s.shape == (6, 51) and torch.isfinite(s).all()
    with pytest.raises(RuntimeError):  # a mismatched architecture must not load silently
        make_model(n_items=50, stage="finetune", modalities=("text", "image")).load_transferable(state)


def test_both_stages_run_through_the_trainer(small_split):
    """pretrain (prefix rows, bucketed) -> transfer -> fine-tune (packed rows) with the real loop."""
    from bench.engine.evaluator import EvalConfig
    from bench.engine.trainer import fit

    n = small_split.n_items
    feats = ItemFeatures.random(n, dim=DIM, seed=0)
    ctx = ModelContext(n, 20, small_split.train.item_counts(n), feats)
    cfg = UniSRecConfig(**TINY)
    state, results = None, {}
    for stage in UniSRec.stages_for(cfg):
        torch.manual_seed(0)
        model = UniSRec(cfg, ctx)
        model.set_stage(stage)
        if state is not None:
            model.load_transferable(state)
            frozen = [p.detach().clone() for p in _frozen(model)]
        trainer = TrainerConfig(**{**UniSRec.trainer_defaults[stage], "epochs": 2, "batch_size": 256})
        results[stage] = fit(model, small_split, stage, trainer, EvalConfig(), 0, 20)
        state = model.transferable_state()
    assert all(len(r.history) == 2 and math.isfinite(r.history[-1]["loss"]) for r in results.values())
    assert all(torch.equal(p, q) for p, q in zip(_frozen(model), frozen))
    assert results["finetune"].best_value > 0


def test_losses_and_scores_hold_up_under_bf16_autocast():
    for stage, batch in (("pretrain", prefix_batch()), ("finetune", packed_batch())):
        m = make_model(stage=stage, modalities=("text", "image"))
        m.eval()  # no dropout / noise: both precisions see the same function (up to the view)
        with torch.no_grad():
            torch.manual_seed(1)
            ref = m.loss(batch).item()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                torch.manual_seed(1)
                low = m.loss(batch).item()
                s = m.score(batch["input"], batch["lengths"])
        assert s.dtype == torch.float32 and s.shape == (len(batch["input"]), 31) and torch.isfinite(s).all()
        assert low == pytest.approx(ref, rel=0.05, abs=0.05), stage
