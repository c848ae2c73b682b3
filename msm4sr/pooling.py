"""Attention pooling over an item's slots: a = softmax(W2 (W1 x + b1) + b2), e = sum_j a_j x_j."""

from __future__ import annotations

import torch
from torch import nn


class AttentionPool(nn.Module):
    """No non-linearity between W1 (d -> pool_hidden) and W2 (pool_hidden -> 1), as in the authors'
    code, so the slot logit is the affine map x @ (W1^T w2) + (w2 . b1 + b2): computed that way it
    never materialises the [N, S, pool_hidden] intermediate (same function, same gradients)."""

    def __init__(self, dim: int, hidden: int = 64, mask_padded: bool = True):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(hidden, 1)
        self.mask_padded = mask_padded

    def slot_logits(self, x: torch.Tensor) -> torch.Tensor:
        v = self.w1.weight.t() @ self.w2.weight[0]  # [d]
        c = self.w2.weight[0] @ self.w1.bias + self.w2.bias[0]
        return x @ v.to(x.dtype) + c.to(x.dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [..., S, d], mask [..., S] (True = real slot) -> [..., d]. Items with no real slot
        (the padding item, an item without images) pool to zeros when padded slots are masked."""
        logits = self.slot_logits(x)
        if self.mask_padded:
            has = mask.any(-1, keepdim=True)
            logits = logits.masked_fill(~mask, float("-inf"))
            logits = torch.where(has, logits, torch.zeros_like(logits))
            a = torch.softmax(logits, dim=-1) * has
        else:  # released code: zero-padded slots take part in the softmax
            a = torch.softmax(logits, dim=-1)
        return (a.unsqueeze(-2).to(x.dtype) @ x).squeeze(-2)  # bmm: no [.., S, d] temporary
