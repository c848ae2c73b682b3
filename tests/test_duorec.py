"""DuoRec's contrastive scale: the reason its default (dot, tau 1) collapses on short, ambiguous
data and the cosine option does not (see baselines/duorec.py's docstring)."""

from __future__ import annotations

import math

import torch

from baselines.seqops import nt_xent
from bench.nn.model import ModelContext, last_position
from bench.plugins import get_model_class


def _batch(n: int = 32, n_items: int = 30, width: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, width + 1, (n,), generator=g)
    cols = torch.arange(width).unsqueeze(0)
    seq = torch.where(cols < lengths.unsqueeze(1), torch.randint(1, n_items + 1, (n, width), generator=g), 0)
    target = torch.zeros(n, width, dtype=torch.long)
    target[torch.arange(n), lengths - 1] = torch.randint(1, n_items + 1, (n,), generator=g)
    return {"input": seq, "target": target, "lengths": lengths}


def test_dot_logits_span_the_hidden_size_and_cosine_bounds_them():
    cls = get_model_class("duorec")
    ctx = ModelContext(n_items=30, max_len=6, train_item_counts=None)
    batch = _batch()
    n = len(batch["lengths"])
    torch.manual_seed(0)
    model = cls(cls.Config(hidden=32, ffn=32, positive_bank=0), ctx)
    model.train()
    z = last_position(model.encode(batch["input"]), batch["lengths"])
    # the encoder ends in a LayerNorm: every view has norm ~sqrt(hidden), so dot/tau=1 logits
    # reach +-hidden (a 64-wide model: +-64 nats), whatever the training has learnt
    assert torch.allclose(z.norm(dim=-1), torch.full((n,), math.sqrt(32)), rtol=0.05)
    # a planted worst case: each positive is the negation of its anchor, so every positive
    # logit sits at the bottom of the range. Dot: the loss grows with the norm (saturated);
    # cosine over tau is scale-free and bounded by ln(2N - 1) + 2 / tau
    a = z.detach()
    dot_small, dot_big = nt_xent(a, -a, 1.0, "dot"), nt_xent(4 * a, -4 * a, 1.0, "dot")
    assert dot_big > 10 * dot_small > 0
    cos_small, cos_big = nt_xent(a, -a, 0.1, "cos"), nt_xent(4 * a, -4 * a, 0.1, "cos")
    assert torch.allclose(cos_small, cos_big, atol=1e-5)
    assert cos_big <= math.log(2 * n - 1) + 2 / 0.1
    # the option reaches the model's own loss (the recorded contrastive part obeys the bound)
    torch.manual_seed(0)
    cosine = cls(cls.Config(hidden=32, ffn=32, positive_bank=0, similarity="cos", tau=0.1), ctx)
    cosine.train()
    assert torch.isfinite(cosine.loss(batch))
    assert 0 < float(cosine.loss_parts["cl"]) <= math.log(2 * n - 1) + 2 / 0.1
