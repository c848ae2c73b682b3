"""VQ-Rec: codes fitted on training items only (leakage), deterministic faiss fits, code layout,
item = mean of code embeddings, code-replacement hard negatives, the two fine-tuning phases
(Sinkhorn re-assignment, then code embeddings with a frozen Transformer) and transfer."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch
from helpers import fit_steps, random_prefix_batch

import baselines.vqrec  # noqa: F401
from baselines import vq_codes
from baselines.vqrec import fake_codes, sinkhorn
from bench.errors import BenchError
from bench.features.item_features import ItemFeatures
from bench.nn.model import ModelContext
from bench.plugins import MODELS, get_model_class

DIM = 16
TINY = {"hidden": 32, "ffn": 64, "n_codes": 4, "code_bits": 4, "dropout": 0.1}  # K = 16 centroids
L = 8


@pytest.fixture(autouse=True)
def fresh_cache():
    vq_codes._CACHE.clear()  # every test fits for real
    yield
    vq_codes._CACHE.clear()


def context(n_items: int, n_train: int, seed: int = 0, feats: ItemFeatures | None = None) -> ModelContext:
    counts = np.zeros(n_items + 1, dtype=np.int64)
    counts[1 : n_train + 1] = np.arange(n_train) % 3 + 1
    feats = feats if feats is not None else ItemFeatures.random(n_items, dim=DIM, seed=seed)
    return ModelContext(n_items, L, counts, features=feats)


def build(ctx: ModelContext, **overrides):
    cls = get_model_class("vqrec")
    return cls(cls.Config(**{**TINY, **overrides}), ctx)


def prefix_batch(n_items: int, b: int = 48, seed: int = 0) -> dict[str, torch.Tensor]:
    return random_prefix_batch(n_items, b, L, seed, share_target=False)


def packed_batch(n_items: int, b: int = 48, seed: int = 0) -> dict[str, torch.Tensor]:
    """Sequences following a fixed item -> next item rule, so that fine-tuning has something to learn."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, L + 1, (b,), generator=g)
    seq = torch.zeros(b, L + 1, dtype=torch.long)
    seq[:, 0] = torch.randint(1, n_items + 1, (b,), generator=g)
    for t in range(1, L + 1):
        seq[:, t] = (seq[:, t - 1] * 7 + 3) % n_items + 1
    real = torch.arange(L) < lengths[:, None]
    return {"input": seq[:, :L] * real, "target": torch.where(real, seq[:, 1:], 0), "lengths": lengths}


def clone(batch):
    return {k: v.clone() for k, v in batch.items()}


# --- configuration -------------------------------------------------------------------------------


def test_registered_defaults_stages_and_specs():
    cls = get_model_class("vqrec")
    assert "vqrec" in MODELS and cls.label == "VQ-Rec"
    c = cls.Config()
    assert (c.hidden, c.layers, c.heads, c.ffn, c.dropout, c.tau) == (64, 2, 2, 256, 0.5, 0.07)
    assert (c.n_codes, c.code_bits, c.fake_ratio, c.n_fake, c.seq_weight) == (32, 8, 0.75, 1, 0.0)
    assert c.modalities == ("text",) and c.freeze_encoder and c.reassign and c.pretrain
    assert cls.Config(modalities=("image", "text")).modalities == ("text", "image")
    with pytest.raises(ValueError):
        cls.Config(modalities=())
    with pytest.raises(ValueError):
        cls.Config(not_a_field=1)
    for field, spec in cls.Config.search_space().items():
        assert field in cls.Config.model_fields and spec[0] in {"float", "int", "categorical"}
    assert cls.stages_for(c) == ("pretrain", "finetune")
    assert cls.stages_for(cls.Config(pretrain=False)) == ("finetune",)
    assert cls.needs_features(c)["image_kind"] == "none"
    assert "image_kind" not in cls.needs_features(cls.Config(modalities=("text", "image")))
    assert set(cls.trainer_defaults) == {"pretrain", "finetune"}
    model = build(context(30, 24))
    pre, fine = model.stage_spec("pretrain"), model.stage_spec("finetune")
    assert set(pre) < set(fine) and "n_codes" in pre and "fake_ratio" in pre
    assert not {"reassign_steps", "freeze_encoder", "pretrain", "sinkhorn_iters"} & set(pre)


def test_clear_errors_for_impossible_settings():
    with pytest.raises(BenchError, match="n_codes"):
        build(context(30, 24), n_codes=5)  # 16 % 5 != 0
    with pytest.raises(BenchError, match="code_bits"):
        build(context(30, 12), code_bits=4)  # 12 training items < 16 centroids
    with pytest.raises(BenchError, match="opq_iters"):
        build(context(30, 12), code_bits=3)  # 8 centroids fit, but 12 items < 16 dimensions for OPQ
    assert build(context(30, 12), code_bits=3, opq_iters=0).item_codes.max() == 4 * 8  # plain PQ
    with pytest.raises(BenchError, match="features"):
        get_model_class("vqrec")(get_model_class("vqrec").Config(**TINY), ModelContext(30, L, np.ones(31)))


# --- codes ---------------------------------------------------------------------------------------


def test_quantiser_is_fitted_on_training_items_only(monkeypatch):
    """THE LEAKAGE TEST: items outside training never reach the fit; changing their features leaves
    the quantiser and every training item's codes unchanged."""
    n, n_train = 60, 40
    ctx = context(n, n_train, seed=1)
    fits = []
    real_fit = vq_codes.fit_quantizer

    def spy(x, *args, **kwargs):
        q = real_fit(x, *args, **kwargs)
        fits.append((np.array(x, copy=True), q))
        return q

    monkeypatch.setattr(vq_codes, "fit_quantizer", spy)
    a = build(ctx).item_codes
    feats = ctx.features
    changed = ItemFeatures(feats.text.clone(), feats.text_mask, feats.image, feats.image_mask, feats.meta)
    g = torch.Generator().manual_seed(9)
    changed.text[n_train + 1 :] = torch.randn(changed.text[n_train + 1 :].shape, generator=g) * 50
    vq_codes._CACHE.clear()
    b = build(ModelContext(n, L, ctx.train_item_counts, features=changed)).item_codes

    assert len(fits) == 2
    train_rows = feats.mean("text")[1 : n_train + 1].numpy()
    for x, _ in fits:  # exactly the training items' vectors, nothing else
        np.testing.assert_array_equal(x, train_rows)
    (_, q1), (_, q2) = fits
    for field in ("rotation", "center", "centroids"):
        np.testing.assert_array_equal(getattr(q1, field), getattr(q2, field))
    assert torch.equal(a[: n_train + 1], b[: n_train + 1])
    assert not torch.equal(a[n_train + 1 :], b[n_train + 1 :])  # the changed items were re-assigned
    # and the fit ignores item order outside training: a context without the extra items agrees
    vq_codes._CACHE.clear()
    small = build(context(n_train, n_train, feats=_first(feats, n_train))).item_codes
    assert torch.equal(small, a[: n_train + 1])


def _first(feats: ItemFeatures, n: int) -> ItemFeatures:
    return ItemFeatures(
        feats.text[: n + 1],
        feats.text_mask[: n + 1],
        feats.image[: n + 1],
        feats.image_mask[: n + 1],
        feats.meta,
    )


def test_fit_is_deterministic_layout_and_matches_faiss():
    ctx = context(80, 70, seed=2)
    a = build(ctx).item_codes
    vq_codes._CACHE.clear()
    b = build(ctx).item_codes
    assert torch.equal(a, b)
    x = ctx.features.mean("text")[1:71].numpy()
    q1 = vq_codes.fit_quantizer(x, 4, 4, opq_iters=5)
    q2 = vq_codes.fit_quantizer(x, 4, 4, opq_iters=5)
    assert all(np.array_equal(getattr(q1, f), getattr(q2, f)) for f in ("rotation", "center", "centroids"))
    assert np.allclose(q1.rotation @ q1.rotation.T, np.eye(DIM), atol=1e-4)  # OPQ: a rotation
    assert not np.allclose(q1.rotation, np.eye(DIM))
    # layout: padding row 0, sub-space k uses ids 1 + 16k .. 16(k+1), every code in range
    k = 16
    assert a.shape == (81, 4) and a.dtype == torch.long and (a[0] == 0).all()
    local = a[1:] - 1 - torch.arange(4) * k
    assert local.min() >= 0 and local.max() < k
    assert all(len(torch.unique(local[:, j])) > 4 for j in range(4))  # the codebooks are used
    # the codes are faiss's own nearest-centroid assignment (compute_codes, bits unpacked)
    pq = faiss.ProductQuantizer(DIM, 4, 4)
    faiss.copy_array_to_vector(q1.centroids.ravel(), pq.centroids)
    packed = pq.compute_codes(np.ascontiguousarray(x @ q1.rotation.T - q1.center, dtype=np.float32))
    bits = np.unpackbits(packed, axis=1, bitorder="little").reshape(len(x), 4, 4)
    np.testing.assert_array_equal((bits * 2 ** np.arange(4)).sum(-1), vq_codes.assign_codes(q1, x))


def test_text_image_vectors_are_concatenated(monkeypatch):
    dims = []
    real_fit = vq_codes.fit_quantizer
    monkeypatch.setattr(
        vq_codes, "fit_quantizer", lambda x, *a, **kw: dims.append(x.shape[1]) or real_fit(x, *a, **kw)
    )
    ctx = context(40, 32, seed=3)
    both = build(ctx, modalities=("text", "image"))
    image = build(ctx, modalities=("image",))
    assert dims == [2 * DIM, DIM]
    assert both.item_codes.shape == image.item_codes.shape == (41, 4)
    assert not torch.equal(both.item_codes, image.item_codes)


# --- item representation and hard negatives ------------------------------------------------------


def test_item_is_the_mean_of_its_code_embeddings():
    model = build(context(30, 24)).eval()
    w = model.code_emb.weight
    items = model.item_table()
    for i in (1, 7, 25, 30):
        codes = model.item_codes[i]
        assert torch.allclose(items[i], w[codes].mean(0), atol=1e-6)
    assert (w[0] == 0).all() and (items[0] == 0).all()  # the padding code and the padding item
    seq = torch.tensor([[3, 5, 0, 0]])
    assert torch.allclose(model.embed_codes(model.item_codes[seq], w), items[seq], atol=1e-6)


def test_hard_negatives_replace_about_rho_of_the_codes_and_never_alias():
    k, m, rho = 16, 8, 0.5
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, k, (3000, m), generator=g) + 1 + torch.arange(m) * k
    before = codes.clone()
    fakes = fake_codes(codes, 3, rho, k, generator=g)
    assert torch.equal(codes, before) and fakes.data_ptr() != codes.data_ptr()
    assert fakes.shape == (3000, 3, m)
    local = fakes - 1 - torch.arange(m) * k
    assert local.min() >= 0 and local.max() < k  # every code stays in its own sub-space
    differ = fakes != codes.unsqueeze(1)
    assert differ.any(-1).all()  # never the positive itself
    expected = rho * m + (1 - rho) ** m  # Bernoulli(rho) per code, at least one forced
    assert abs(differ.sum(-1).float().mean().item() - expected) < 0.05
    assert (differ.float().mean((0, 1)) - rho).abs().max() < 0.03
    # replacement codes are uniform over the other K - 1 codes of the sub-space
    new = local[differ]
    counts = torch.bincount(new, minlength=k).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.15
    fakes[:] = 0
    assert torch.equal(codes, before)


def test_pretrain_loss_decreases_uses_fakes_and_masks_shared_targets():
    n = 30
    ctx = context(n, 24)
    torch.manual_seed(0)
    model = build(ctx, n_fake=3)
    model.set_stage("pretrain")
    batch = prefix_batch(n)
    batch["target"][1, batch["lengths"][1] - 1] = batch["target"][
        0, batch["lengths"][0] - 1
    ]  # a shared target
    before, codes = clone(batch), model.item_codes.clone()
    # in eval mode (no dropout) the loss without fakes is the in-batch InfoNCE computed by hand
    model.eval()
    no_fake = build(ctx, n_fake=0)
    no_fake.load_state_dict(model.state_dict())
    no_fake.set_stage("pretrain")
    no_fake.eval()
    with torch.no_grad():
        base = no_fake.loss(batch)
        h = torch.nn.functional.normalize(no_fake.encoder(no_fake.item_table()[batch["input"]]), dim=-1)
        h = h[torch.arange(len(h)), batch["lengths"] - 1]
        tgt = batch["target"].max(1).values
        z = torch.nn.functional.normalize(no_fake.item_table()[tgt], dim=-1)
        logits = h @ z.T / 0.07
        same = (tgt[:, None] == tgt[None]) & ~torch.eye(len(tgt), dtype=torch.bool)
        want = torch.nn.functional.cross_entropy(
            logits.masked_fill(same, float("-inf")), torch.arange(len(tgt))
        )
        torch.manual_seed(1)
        with_fakes = model.loss(batch)
    assert torch.allclose(base, want, atol=1e-5)
    assert with_fakes > base  # the fakes enlarge every denominator
    losses = fit_steps(model, batch, 30)
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert all(torch.equal(batch[k], before[k]) for k in batch) and torch.equal(model.item_codes, codes)
    seqseq = build(ctx, seq_weight=0.5)
    seqseq.set_stage("pretrain")
    assert np.isfinite(fit_steps(seqseq, batch, 3)).all()
    with pytest.raises(ValueError, match="prefix"):
        model.loss(packed_batch(n))


# --- fine-tuning ---------------------------------------------------------------------------------


def _pretrained(ctx, **overrides):
    torch.manual_seed(0)
    pre = build(ctx, **overrides)
    pre.set_stage("pretrain")
    fit_steps(pre, prefix_batch(ctx.n_items), 5)
    return pre


def test_finetune_phases_reassignment_then_frozen_encoder():
    n = 30
    ctx = context(n, 24)
    pre = _pretrained(ctx)
    fine = build(ctx, reassign_steps=3)
    fine.set_stage("finetune")
    fine.load_transferable(pre.transferable_state())
    assert not any(p.requires_grad for p in fine.encoder.position.parameters())
    assert not any(p.requires_grad for p in fine.encoder.encoder.parameters())
    assert fine.encoder.norm.weight.requires_grad and fine.perm_logits.requires_grad
    # the assignment starts as the identity: the pre-trained table is used as it is
    assert torch.equal(fine.code_table(), fine.code_emb.weight)
    frozen = {k: v.clone() for k, v in fine.encoder.encoder.state_dict().items()}
    batch = packed_batch(n)
    opt = torch.optim.Adam([p for p in fine.parameters() if p.requires_grad], lr=5e-3)
    fine.train()
    grads = []
    for _ in range(6):
        loss = fine.loss(batch)
        opt.zero_grad()
        loss.backward()
        grads.append({k for k, p in fine.named_parameters() if p.grad is not None})
        opt.step()
    assert grads[:3] == [{"perm_logits"}] * 3  # phase 1: only the assignment trains
    assert grads[3] == {"code_emb.weight", "encoder.norm.weight", "encoder.norm.bias"}  # phase 2
    assert int(fine.finetune_steps) == 6 and not fine.reassigning
    assert all(torch.equal(v, fine.encoder.encoder.state_dict()[k]) for k, v in frozen.items())
    # the hard map is what the forward uses in both phases and at evaluation
    fine.eval()
    with torch.no_grad():
        scores = fine.score(batch["input"][:5], batch["lengths"][:5])
    assert scores.shape == (5, n + 1) and torch.isfinite(scores).all()
    losses = fit_steps(fine, batch, 30)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    # no pre-training: nothing to re-assign or freeze
    scratch = build(ctx, pretrain=False)
    assert scratch.stages == ("finetune",) and scratch.stage == "finetune"
    assert (
        all(p.requires_grad for p in scratch.encoder.parameters()) and not scratch.perm_logits.requires_grad
    )
    assert torch.equal(scratch.code_table(), scratch.code_emb.weight)
    losses = fit_steps(scratch, batch, 20)
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_sinkhorn_assignment_learns_a_planted_permutation():
    torch.manual_seed(0)
    model = build(context(30, 24), reassign_steps=10**6)
    model.set_stage("finetune")
    model.train()
    s = sinkhorn(torch.randn(4, 16, 16), 50)
    assert torch.allclose(s.sum(-1), torch.ones(4, 16), atol=1e-4)
    assert torch.allclose(s.sum(-2), torch.ones(4, 16), atol=1e-4)
    g = torch.Generator().manual_seed(1)
    perm = torch.stack([torch.randperm(16, generator=g) for _ in range(4)])
    blocks = model.code_emb.weight[1:].detach().view(4, 16, -1)
    want = torch.gather(blocks, 1, perm.unsqueeze(-1).expand_as(blocks)).reshape(64, -1)
    opt = torch.optim.Adam([model.perm_logits], lr=0.02)
    for _ in range(150):
        loss = ((model.code_table()[1:] - want) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    pick = sinkhorn(model.perm_logits / model.config.sinkhorn_tau, model.config.sinkhorn_iters).argmax(-1)
    assert (pick == perm).float().mean() > 0.9
    with torch.no_grad():
        assert torch.allclose(
            model.code_table()[1:][pick.flatten() == perm.flatten()], want[pick.flatten() == perm.flatten()]
        )


def test_transfer_to_a_larger_dataset_refits_codes_and_keeps_embeddings():
    small = context(30, 24, seed=4)
    pre = _pretrained(small)
    state = pre.transferable_state()
    assert not any(k.startswith(("item_codes", "perm_logits", "finetune_steps")) for k in state)
    big = context(50, 40, seed=5)
    fine = build(big)
    fine.set_stage("finetune")
    fine.load_transferable(state)
    assert torch.equal(fine.code_emb.weight, pre.code_emb.weight)
    assert torch.equal(fine.encoder.position.weight, pre.encoder.position.weight)
    assert fine.item_codes.shape == (51, 4) and pre.item_codes.shape == (31, 4)
    vq_codes._CACHE.clear()
    assert torch.equal(fine.item_codes, build(big).item_codes)  # the target's own fit
    batch = packed_batch(50)
    assert np.isfinite(fit_steps(fine, batch, 5)).all()
    fine.eval()
    with torch.no_grad():
        scores = fine.score(batch["input"][:7], batch["lengths"][:7])
    assert scores.shape == (7, 51) and torch.isfinite(scores).all()
    pre.eval()
    with torch.no_grad():
        assert pre.score(batch["input"][:7].clamp(max=30), batch["lengths"][:7]).shape == (7, 31)
