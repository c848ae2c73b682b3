"""FDSA (Zhang et al. 2019), multimodal variant: two causal self-attention streams.

- item stream: ID embeddings -> SequenceTransformer;
- feature stream: per item, each modality's MLP vector (bench.nn.feature_mlp) merged by vanilla
  attention (score = Linear(H, H) -> ReLU -> Linear(H, 1) per vector, softmax over the item's
  vectors, weighted sum; RecBole's VanillaAttention) -> a second SequenceTransformer.
The two outputs are concatenated -> Linear(2H, H) -> LayerNorm -> dropout (RecBole's FDSA) and
scored against the ID embedding table: CE over all items at every target of a packed row.

A modality an item lacks is left out of its softmax; an item with no feature vector at all
(and the padding item) gets a zero feature-stream input. Each stream has its own position
embedding and input LayerNorm (RecBole shares one of each between the streams).
"""

from __future__ import annotations

import torch
from torch import nn

from bench.nn.feature_mlp import ContentConfig, ItemFeatureMLPs
from bench.nn.model import MODELS, ModelContext, SeqRecModel, last_position
from bench.nn.softmax_ce import next_item_ce
from bench.nn.transformer import SequenceTransformer, init_weights


class FDSAConfig(ContentConfig):
    pass


class VanillaAttention(nn.Module):
    """[.., M, H] vectors and [.., M] mask -> ([.., H] weighted sum, [.., M] weights)."""

    def __init__(self, hidden: int, attn_hidden: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(hidden, attn_hidden), nn.ReLU(), nn.Linear(attn_hidden, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.score(x).squeeze(-1)
        # a finite fill keeps rows without any vector NaN-free (uniform, then zeroed by the mask)
        e = e.masked_fill(~mask, torch.finfo(e.dtype).min)
        w = torch.softmax(e, dim=-1) * mask.to(e.dtype)
        return (w.unsqueeze(-1) * x).sum(-2), w


@MODELS.register("fdsa")
class FDSA(SeqRecModel):
    Config = FDSAConfig
    label = "FDSA"

    def __init__(self, config: FDSAConfig, ctx: ModelContext):
        super().__init__(config, ctx)
        h = config.hidden
        args = (h, config.layers, config.heads, config.ffn, config.dropout, ctx.max_len)
        self.item_emb = nn.Embedding(ctx.n_items + 1, h, padding_idx=0)
        self.item_encoder = SequenceTransformer(*args)
        self.features = ItemFeatureMLPs(config, ctx, "fdsa")
        self.attention = VanillaAttention(h, h)
        self.feature_encoder = SequenceTransformer(*args)
        self.concat = nn.Linear(2 * h, h)
        self.out_norm = nn.LayerNorm(h, eps=1e-12)
        self.out_dropout = nn.Dropout(config.dropout)
        init_weights(self)

    def merged_features(self, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L] ids -> ([B, L, H] attention-merged feature vectors, [B, L, M] weights)."""
        mods = self.features.modalities
        x = torch.stack([self.features(m, seq) for m in mods], dim=-2)
        mask = torch.stack([self.features.present(m, seq) for m in mods], dim=-1)
        return self.attention(x, mask)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        items = self.item_encoder(self.item_emb(seq))
        feats = self.feature_encoder(self.merged_features(seq)[0])
        out = self.concat(torch.cat([items, feats], dim=-1))
        return self.out_dropout(self.out_norm(out))

    def loss(self, batch):
        return next_item_ce(self.encode(batch["input"]), batch["target"], self.item_emb.weight, self.train_classes)

    def score(self, history, lengths):
        return last_position(self.encode(history), lengths) @ self.item_emb.weight.T
