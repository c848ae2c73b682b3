"""GRU4Rec with full-softmax cross-entropy (the RecBole-style variant, labelled "GRU4Rec (CE)").

The original (Hidasi et al. 2016/2018) trains on session-parallel mini-batches with BPR-max and
sampled negatives; this variant runs a GRU over each left-aligned item sequence and scores the
state at every position against all items. The GRU is causal, so 'packed' rows (loss at every
position) train exactly the same (prefix -> next item) pairs as 'prefix' rows, but batch them
differently (every prefix of a few users per batch): the default is 'prefix' rows, as RecBole.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from bench.nn.model import MODELS, ModelConfig, ModelContext, SeqRecModel, last_position
from bench.nn.softmax_ce import next_item_ce, softmax_ce


class GRU4RecConfig(ModelConfig):
    embedding: int = 64
    hidden: int = 128
    layers: int = Field(1, ge=1)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)  # on the item embeddings (RecBole's emb_dropout)
    # RecBole's training softmax also has the padding item (id 0) as a class: its fixed random
    # embedding row (padding_idx: no gradient) only adds a term to the denominator. False: the
    # harness's classes, real items only (the padding item can never be a target).
    pad_class: bool = False

    @classmethod
    def search_space(cls):
        return {
            "dropout": ("float", 0.0, 0.5),
            "hidden": ("categorical", [64, 128, 256]),
            "layers": ("int", 1, 2),
        }


@MODELS.register("gru4rec")
class GRU4Rec(SeqRecModel):
    Config = GRU4RecConfig
    label = "GRU4Rec (CE)"
    # RecBole's layout: one (prefix -> next item) row per target, 256 rows a batch. On scientific
    # (seed 0, 50 epochs, patience 5) it reached a better validation Recall@20 than 64 packed rows
    # (0.1228 vs 0.1183; 256 packed rows: 0.107): rows of many users per batch rather than every
    # prefix of 64 users. It also closed most of the test gap to RecBole 1.2.1 (issue 22).
    trainer_defaults = {"train": {"batch_size": 256, "sample_mode": "prefix"}}

    def __init__(self, config: GRU4RecConfig, ctx: ModelContext):
        super().__init__(config, ctx)
        self.item_emb = nn.Embedding(ctx.n_items + 1, config.embedding, padding_idx=0)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(config.embedding, config.hidden, config.layers, bias=False, batch_first=True)
        self.dense = nn.Linear(config.hidden, config.embedding)  # back to the item space
        nn.init.xavier_normal_(self.item_emb.weight)
        for name, w in self.gru.named_parameters():
            if "weight" in name:
                nn.init.xavier_uniform_(w)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.emb_dropout(self.item_emb(seq)))
        return self.dense(out)

    def loss(self, batch):
        out, target = self.encode(batch["input"]), batch["target"]
        if self.config.pad_class and self.train_classes is None:
            keep = target > 0
            return softmax_ce(out[keep], self.item_emb.weight, target[keep])  # class i = item id i
        return next_item_ce(out, target, self.item_emb.weight, self.train_classes)

    def score(self, history, lengths):
        return last_position(self.encode(history), lengths) @ self.item_emb.weight.T
