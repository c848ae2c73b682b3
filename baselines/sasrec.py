"""SASRec (Kang & McAuley 2018) trained with softmax cross-entropy over all items (RecBole style)."""

from __future__ import annotations

import torch
from torch import nn

from bench.nn.model import MODELS, ModelContext, SeqRecModel, last_position
from bench.nn.softmax_ce import next_item_ce
from bench.nn.transformer import SequenceTransformer, TransformerConfig, init_weights


class SASRecConfig(TransformerConfig):
    """The shared Transformer's fields, under SASRec's name (its subclasses and tables use it)."""


@MODELS.register("sasrec")
class SASRec(SeqRecModel):
    Config = SASRecConfig
    label = "SASRec (CE)"

    def __init__(self, config: SASRecConfig, ctx: ModelContext):
        super().__init__(config, ctx)
        self.item_emb = nn.Embedding(ctx.n_items + 1, config.hidden, padding_idx=0)
        self.encoder = SequenceTransformer(
            config.hidden, config.layers, config.heads, config.ffn, config.dropout, ctx.max_len
        )
        init_weights(self)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.item_emb(seq))

    def loss(self, batch):
        return next_item_ce(self.encode(batch["input"]), batch["target"], self.item_emb.weight, self.train_classes)

    def score(self, history, lengths):
        h = last_position(self.encode(history), lengths)
        return h @ self.item_emb.weight.T
