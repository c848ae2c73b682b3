"""Small builders shared by the model tests (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch


def random_prefix_batch(n_items: int, b: int, max_len: int, seed: int = 0, min_len: int = 1,
                        share_target: bool = True) -> dict[str, torch.Tensor]:
    """'prefix' rows of random items: one target at each row's last real position; with
    `share_target`, rows 0 and 1 have the same next item (an in-batch false negative)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (b,), generator=g)
    inp = torch.randint(1, n_items + 1, (b, max_len), generator=g)
    inp = torch.where(torch.arange(max_len)[None] < lengths[:, None], inp, 0)
    tgt = torch.zeros_like(inp)
    tgt[torch.arange(b), lengths - 1] = torch.randint(1, n_items + 1, (b,), generator=g)
    if share_target:
        tgt[1, lengths[1] - 1] = tgt[0, lengths[0] - 1]
    return {"input": inp, "target": tgt, "lengths": lengths}


def fit_steps(model, batch: dict[str, torch.Tensor], steps: int = 25, lr: float = 5e-3) -> list[float]:
    """Adam on the trainable parameters for `steps` steps on one batch; the losses."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
