"""msm4sr.fast: the CPU speed paths compute the same functions as the modules they replace."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.engine.batching import make_rows
from bench.features.item_features import ItemFeatures
from bench.nn.model import ModelContext
from bench.nn.transformer import SequenceTransformer, init_weights
from msm4sr import fast
from msm4sr.config import MSM4SRConfig
from msm4sr.model import MSM4SR
from protocols.base import TrainSequences

TOL = dict(rtol=1e-5, atol=1e-5)  # reordered float32 arithmetic (grouped batches, manual attention)


def _left_aligned(b: int, length: int, hidden: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (b,), generator=g)
    lengths[0] = length
    x = torch.randn(b, length, hidden, generator=g)
    x = x * (torch.arange(length)[None, :, None] < lengths[:, None, None])
    return x, lengths


@pytest.mark.parametrize("last_only", [True, False])
def test_grouped_encoder_matches_the_padded_transformer(last_only):
    torch.manual_seed(0)
    enc = SequenceTransformer(32, 2, 2, 64, 0.2, 12)
    init_weights(enc, std=0.2)  # larger weights than BERT init: differences would show
    enc.eval()
    x, lengths = _left_aligned(37, 12, 32)
    with torch.no_grad():
        ref = enc(x)
        out = fast.encode_grouped(enc, x, lengths, last_only)
    real = torch.arange(12)[None, :] < lengths[:, None]
    if last_only:
        torch.testing.assert_close(out, ref[torch.arange(37), lengths - 1], **TOL)
    else:
        torch.testing.assert_close(out[real], ref[real], **TOL)
    assert len(fast.length_groups(lengths, overhead=0)) > 1  # the test did exercise several groups


def test_length_groups_cover_each_row_once_and_beat_padding():
    lengths = torch.tensor([50, 3, 3, 1, 7, 50, 2, 2, 2, 9, 1, 1, 1, 4] * 20)
    groups = fast.length_groups(lengths)
    rows = torch.cat([idx for idx, _ in groups])
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    assert all(int(lengths[idx].max()) == width for idx, width in groups)
    cost = sum(len(idx) * w + fast.GROUP_OVERHEAD for idx, w in groups)
    assert cost < len(lengths) * 50 / 3  # padded to 50: ~3x more positions than the groups
    assert len(fast.length_groups(torch.full((9,), 4))) == 1


def test_dropout_is_bernoulli_scaled_and_seeded():
    x = torch.ones(1_000_003, requires_grad=True)
    torch.manual_seed(3)
    y = fast.dropout(x, 0.2)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.002  # 5 sd of a Binomial(1e6, 0.8) mean
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1.25))
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # gradient = mask / (1 - p)
    torch.manual_seed(3)
    assert torch.equal(fast.dropout(x.detach(), 0.2), y.detach())  # same seed, same mask
    # neighbouring 16-bit draws of one word are independent: no correlation between adjacent masks
    k = kept.float()
    assert abs(torch.corrcoef(torch.stack([k[:-1], k[1:]]))[0, 1].item()) < 0.01
    assert fast.dropout(x, 0.2, training=False) is x and fast.dropout(x, 0.0) is x


def _model(**config) -> tuple[MSM4SR, TrainSequences]:
    g = np.random.default_rng(0)
    lengths = g.integers(2, 14, size=40)
    items = g.integers(1, 31, size=int(lengths.sum()))
    train = TrainSequences(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), items.astype(np.int64))
    feats = ItemFeatures.random(30, dim=16, seed=0)
    feats.meta["n_keywords"] = 15
    ctx = ModelContext(30, 10, train.item_counts(30), feats)
    torch.manual_seed(0)
    cfg = MSM4SRConfig(hidden=16, ffn=32, pool_hidden=8, n_experts=3, **config)
    return MSM4SR(cfg, ctx), train


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_fast_training_loss_and_gradients_equal_the_reference_path(stage, monkeypatch):
    """Dropouts off (the only randomness left is the augmentations, drawn identically): the fast
    path gives the loss and every gradient of the per-modality padded encoder path."""
    model, train = _model(dropout=0.0, adaptor_dropout=0.0)
    model.set_stage(stage)
    model.train()
    inp, tgt = make_rows(train, 10, model.sample_mode_for(stage))
    batch = {"input": inp[:48], "target": tgt[:48], "lengths": (inp[:48] > 0).sum(1)}
    batch = {k: v[:, : int(batch["lengths"].max())] if v.dim() == 2 else v for k, v in batch.items()}

    def loss_and_grads():
        torch.manual_seed(1)
        model.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    calls = []
    grouped = fast.encode_grouped
    monkeypatch.setattr(fast, "encode_grouped", lambda *a: calls.append(1) or grouped(*a))
    fast_loss, fast_grads = loss_and_grads()
    assert calls  # the fast path did run
    monkeypatch.setattr(fast, "supported", lambda *a: False)
    ref_loss, ref_grads = loss_and_grads()
    torch.testing.assert_close(fast_loss, ref_loss, **TOL)
    assert fast_grads.keys() == ref_grads.keys() and len(ref_grads) > 10
    for name, grad in ref_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
