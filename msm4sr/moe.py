"""Mixture-of-experts adaptor: expert_k(e) = LayerNorm_k(Dropout(Linear_k(e))), gate softmax(e W_g)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from msm4sr.fast import Dropout


class MoEAdaptor(nn.Module):
    """The K experts are held as batched parameters (one einsum instead of K Linear calls)."""

    def __init__(self, dim: int, out: int = 64, n_experts: int = 8, dropout: float = 0.2, ln_eps: float = 1e-12):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_experts, out, dim))
        self.bias = nn.Parameter(torch.empty(n_experts, out))
        self.ln_weight = nn.Parameter(torch.ones(n_experts, out))
        self.ln_bias = nn.Parameter(torch.zeros(n_experts, out))
        self.gate = nn.Parameter(torch.zeros(dim, n_experts))  # zero init: equal expert weights
        self.dropout = Dropout(dropout)  # nn.Dropout with a cheaper CPU mask (msm4sr.fast)
        self.ln_eps = ln_eps
        self.out = out
        nn.init.normal_(self.weight, 0.0, 0.02)  # as the authors' ExpertLayer
        bound = 1.0 / math.sqrt(dim)  # PyTorch's default Linear bias init (not re-initialised there)
        nn.init.uniform_(self.bias, -bound, bound)

    def gates(self, e: torch.Tensor) -> torch.Tensor:
        return torch.softmax(e @ self.gate.to(e.dtype), dim=-1)

    def project(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-item part: expert Linear outputs [..., K, out] and gates [..., K]."""
        y = torch.einsum("...d,kod->...ko", e, self.weight.to(e.dtype)) + self.bias.to(e.dtype)
        return y, self.gates(e)

    def combine(self, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The per-occurrence part: Dropout, the experts' LayerNorms, the gated sum."""
        y = F.layer_norm(self.dropout(y), (self.out,), eps=self.ln_eps)
        return (g.unsqueeze(-1) * (y * self.ln_weight + self.ln_bias)).sum(-2)

    def experts(self, e: torch.Tensor) -> torch.Tensor:
        """[..., d] -> [..., K, out]"""
        y = F.layer_norm(self.dropout(self.project(e)[0]), (self.out,), eps=self.ln_eps)
        return y * self.ln_weight + self.ln_bias

    def forward(self, e: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """[U, d] -> [U, out]; with `index` (any shape of row numbers into e) -> [*index.shape, out].
        Indexing after the Linear and before Dropout is the same function as adapting e[index]
        (own dropout per occurrence) at a fraction of the cost when items repeat."""
        y, g = self.project(e)
        if index is not None:
            y, g = y[index], g[index]
        return self.combine(y, g)
