"""The Transformer sequence encoder shared by every attention-based model in the harness."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from bench.nn.model import ModelConfig


class TransformerConfig(ModelConfig):
    """SASRec's Transformer fields (hidden 64, 2x2, FFN 256, dropout 0.2): the base of every
    Transformer model's config. It lives with the layer, not with a model, so shared layers
    (bench.nn.feature_mlp) build on it without importing a model package."""

    hidden: int = 64
    layers: int = 2
    heads: int = 2
    ffn: int = 256
    dropout: float = Field(0.2, ge=0.0, lt=1.0)

    @classmethod
    def search_space(cls):
        return {"dropout": ("float", 0.1, 0.5), "hidden": ("categorical", [64, 128])}


class SequenceTransformer(nn.Module):
    """Learned absolute positions + LayerNorm + dropout, then post-LN Transformer layers (GELU).

    Sequences are left-aligned with padding after the last real item, so a causal encoder needs
    no padding mask: real positions only ever attend to earlier real positions.
    """

    def __init__(
        self,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 2,
        ffn: int = 256,
        dropout: float = 0.2,
        max_len: int = 50,
        causal: bool = True,
        ln_eps: float = 1e-12,
    ):
        super().__init__()
        self.causal = causal
        self.position = nn.Embedding(max_len, hidden)
        self.norm = nn.LayerNorm(hidden, eps=ln_eps)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, ffn, dropout, activation="gelu", batch_first=True, layer_norm_eps=ln_eps
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, L, H] item representations -> [B, L, H]. `padding` [B, L] (True = pad) is only
        needed by bidirectional encoders."""
        length = x.size(1)
        pos = self.position(torch.arange(length, device=x.device))
        h = self.dropout(self.norm(x + pos))
        if self.causal:
            mask = nn.Transformer.generate_square_subsequent_mask(length, device=x.device, dtype=h.dtype)
            return self.encoder(h, mask=mask, is_causal=True)
        return self.encoder(h, src_key_padding_mask=padding)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT-style initialisation (normal(0, std) weights, zero biases, unit LayerNorm)."""
    for m in module.modules():
        if isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            # the packed q/k/v projection is a bare Parameter, not an nn.Linear
            nn.init.normal_(m.in_proj_weight, 0.0, std)
            nn.init.zeros_(m.in_proj_bias)
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
