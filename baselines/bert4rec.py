"""BERT4Rec (Sun et al. 2019): a bidirectional Transformer trained with the Cloze task.

Training rebuilds each row's item sequence from the standard batch (`input` plus its final
target, see seqops.full_sequence), masks every real item with probability `mask_ratio` ([MASK] =
item id n_items + 1), and predicts the masked items with CE over all items. A fraction
`last_mask_samples` of the rows is added a second time with only the last item masked (the
paper's extra samples, matching the inference setting). At inference [MASK] is appended after the
last history item (dropping the oldest item when the history is already max_len long) and its
output is scored.

Rows are 'prefix' rows by default (a trainer default; one row per training target: the prefix
plus its next item), so the last-item-masked copies train next-item prediction at every target,
as every other sequential baseline here is trained. With 'packed' rows (one per
user window, the paper's layout; `trainer.train.sample_mode: packed`) they train it only at each
window's end. RecBole 1.2.1 keeps one row per target but adds no last-item-masked copies (its
ft_ratio is 0). On scientific_mm, test Recall@10 over 3 seeds (results/bert4rec_recbole-*.md):
prefix rows 0.0948, packed rows 0.0732, prefix rows without the copies (`last_mask_samples=0`)
0.0827, RecBole 0.0768 (RecBole minus that row -0.0058, Welch p 0.31): the copies are why this
default scores above RecBole.

Output head: Linear + GELU + LayerNorm, then a dot product with the (shared) input item
embeddings plus a per-item output bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from baselines.seqops import append_item, full_sequence, real_mask
from bench.nn.model import MODELS, ModelConfig, ModelContext, SeqRecModel
from bench.nn.transformer import SequenceTransformer, init_weights


class BERT4RecConfig(ModelConfig):
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    ffn: int = 256
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    mask_ratio: float = Field(0.2, gt=0.0, lt=1.0)
    last_mask_samples: float = Field(1.0, ge=0.0, le=1.0)  # fraction of rows duplicated last-masked

    @classmethod
    def search_space(cls):
        return {
            "dropout": ("float", 0.1, 0.5),
            "mask_ratio": ("float", 0.1, 0.6),
            "hidden": ("categorical", [64, 128]),
        }


@MODELS.register("bert4rec")
class BERT4Rec(SeqRecModel):
    Config = BERT4RecConfig
    label = "BERT4Rec"
    honours_train_classes = False  # its Cloze softmax runs over every item
    sample_mode = "packed"  # the paper's layout; the trainer default below (prefix rows) overrides it
    # under-training is BERT4Rec's classic failure: a longer budget than the harness default. The row
    # layout is a trainer default (as GRU4Rec's) so that it is in the run's spec and hash
    trainer_defaults = {"train": {"epochs": 500, "patience": 30, "sample_mode": "prefix"}}
    # what it needs to converge, which budgets never cut (bench/engine/budgets.py): best validation epochs
    # seen: ~26 on scientific_mm (prefix rows), ~50 with packed rows, 55-93 in RecBole 1.2.1 (patience 20;
    # noisy Cloze validation)
    training_need = {"train": {"epochs": 200, "patience": 20}}

    def __init__(self, config: BERT4RecConfig, ctx: ModelContext):
        super().__init__(config, ctx)
        self.mask_id = ctx.n_items + 1
        self.item_emb = nn.Embedding(ctx.n_items + 2, config.hidden, padding_idx=0)
        self.encoder = SequenceTransformer(
            config.hidden, config.layers, config.heads, config.ffn, config.dropout, ctx.max_len, causal=False
        )
        self.head = nn.Sequential(
            nn.Linear(config.hidden, config.hidden), nn.GELU(), nn.LayerNorm(config.hidden)
        )
        self.out_bias = nn.Parameter(torch.zeros(ctx.n_items + 1))
        init_weights(self)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.item_emb(seq), padding=seq == 0)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """[N, H] encoder outputs -> [N, n_items + 1] (column 0 = padding item)."""
        return self.head(h) @ self.item_emb.weight[: self.n_items + 1].T + self.out_bias

    def cloze(self, seq: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked training rows and their labels (0 = not masked): Cloze rows, then the extra
        rows with only the last item masked."""
        real = real_mask(seq, lengths)
        chosen = (torch.rand(seq.shape, device=seq.device) < self.config.mask_ratio) & real
        masked = torch.where(chosen, self.mask_id, seq)
        labels = torch.where(chosen, seq, 0)
        n_last = round(self.config.last_mask_samples * len(seq))
        if n_last:
            s, n = seq[:n_last], lengths[:n_last]
            last = torch.arange(seq.size(1), device=seq.device).unsqueeze(0) == (n - 1).unsqueeze(1)
            masked = torch.cat([masked, torch.where(last, self.mask_id, s)])
            labels = torch.cat([labels, torch.where(last, s, 0)])
        return masked, labels

    def loss(self, batch):
        seq, lengths = full_sequence(batch, self.max_len)
        masked, labels = self.cloze(seq, lengths)
        out = self.encode(masked)
        keep = labels > 0
        logits = self.logits(out[keep])[:, 1:]
        return F.cross_entropy(logits.float(), labels[keep] - 1)

    def score(self, history, lengths):
        seq, new_len = append_item(history, lengths, self.mask_id, self.max_len)
        out = self.encode(seq)
        h = out[torch.arange(len(seq), device=seq.device), new_len - 1]
        return self.logits(h)
