"""SASRecM: the MSM4SR authors' multimodal SASRec.

Item i = ID embedding + sum over modalities of MLP(mean feature vector) (bench.nn.feature_mlp),
the same representation on the input side and as the candidate table; causal SequenceTransformer;
CE over all items at every target of a packed row. As in the authors' code, input occurrences get
their own MLP dropout and the candidate table is recomputed (with its own dropout) per batch.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.nn.feature_mlp import ContentConfig, ItemFeatureMLPs
from bench.nn.model import MODELS, ModelContext, SeqRecModel, last_position
from bench.nn.softmax_ce import next_item_ce
from bench.nn.transformer import SequenceTransformer, init_weights


class SASRecMConfig(ContentConfig):
    pass


@MODELS.register("sasrecm")
class SASRecM(SeqRecModel):
    Config = SASRecMConfig
    label = "SASRecM"

    def __init__(self, config: SASRecMConfig, ctx: ModelContext):
        super().__init__(config, ctx)
        self.item_emb = nn.Embedding(ctx.n_items + 1, config.hidden, padding_idx=0)
        self.features = ItemFeatureMLPs(config, ctx, "sasrecm")
        self.encoder = SequenceTransformer(
            config.hidden, config.layers, config.heads, config.ffn, config.dropout, ctx.max_len
        )
        init_weights(self)

    def item_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """ID + content vectors of `ids` ([..] -> [.., H]); None = the whole [n_items + 1, H] table."""
        z = self.item_emb.weight if ids is None else self.item_emb(ids)
        for m in self.features.modalities:
            z = z + self.features(m, ids)
        return z

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.item_vectors(seq))

    def loss(self, batch):
        return next_item_ce(self.encode(batch["input"]), batch["target"], self.item_vectors(), self.train_classes)

    def score(self, history, lengths):
        return last_position(self.encode(history), lengths) @ self.item_vectors().T
