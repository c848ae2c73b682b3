"""Popularity: every user gets the items ranked by training frequency (a sanity floor)."""

from __future__ import annotations

import torch

from bench.nn.model import MODELS, ModelConfig, ModelContext, SeqRecModel


@MODELS.register("pop")
class Pop(SeqRecModel):
    label = "Pop"
    trainable = False

    def __init__(self, config: ModelConfig, ctx: ModelContext):
        super().__init__(config, ctx)
        counts = torch.as_tensor(ctx.train_item_counts, dtype=torch.float32)
        self.register_buffer("counts", counts)

    def score(self, history, lengths):
        return self.counts.unsqueeze(0).expand(history.size(0), -1)
