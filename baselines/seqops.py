"""Vectorised sequence operations and losses shared by several baselines.

Sequences follow bench.engine.batching's layout: [B, L] item ids, left-aligned, 0 = padding after the
last real item. Every function here returns new tensors and never writes into its inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from baselines.sasrec import SASRec


def last_target(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B] the target at each row's last real position (the row's final next item)."""
    lengths = batch["lengths"]
    return batch["target"].gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)


def append_item(
    seq: torch.Tensor, lengths: torch.Tensor, item: torch.Tensor | int, max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Put `item` after each row's last real item. Batches may be narrower than max_len (the
    trainer trims trailing padding columns): the result is one column wider, up to max_len; rows
    already holding max_len items drop their oldest item. Returns (new sequences, new lengths)."""
    b, width = seq.shape
    item = torch.as_tensor(item, device=seq.device, dtype=seq.dtype).expand(b)
    wide = torch.cat([seq, seq.new_zeros(b, 1)], dim=1)  # [B, W+1]
    wide = wide.scatter(1, lengths.clamp(max=width).unsqueeze(1), item.unsqueeze(1))
    if width < max_len:
        return wide, lengths + 1
    full = lengths >= width
    out = torch.where(full.unsqueeze(1), wide[:, 1:], wide[:, :width])
    return out, torch.clamp(lengths + 1, max=width)


def full_sequence(batch: dict[str, torch.Tensor], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rebuild each row's item sequence from a standard batch: `input` plus its final target
    (the oldest item is dropped when the row is already max_len long)."""
    return append_item(batch["input"], batch["lengths"], last_target(batch), max_len)


def real_mask(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return torch.arange(seq.size(1), device=seq.device).unsqueeze(0) < lengths.unsqueeze(1)


def sample_negatives(
    pos: torch.Tensor, n_items: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One item per entry, uniform over 1..n_items excluding the entry itself (n_items >= 2)."""
    neg = torch.randint(1, n_items, pos.shape, device=pos.device, generator=generator)
    return neg + (neg >= pos).long()


def random_positions(
    lengths: torch.Tensor, counts: torch.Tensor, length: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """[B, L] bool: `counts[i]` distinct positions chosen uniformly among row i's real positions."""
    keys = torch.rand(len(lengths), length, device=lengths.device, generator=generator)
    pos = torch.arange(length, device=lengths.device).unsqueeze(0)
    keys = torch.where(pos < lengths.unsqueeze(1), keys, 2.0)  # padding sorts last
    rank = keys.argsort(1).argsort(1)
    return rank < counts.unsqueeze(1)


def crop(seq, lengths, eta: float, generator=None):
    """A random contiguous sub-sequence of floor(eta * n) items (at least 1), re-aligned left."""
    n_keep = torch.clamp((eta * lengths.float()).floor().long(), min=1)
    n_keep = torch.minimum(n_keep, lengths.clamp(min=1))
    start = (
        torch.rand(lengths.shape, device=seq.device, generator=generator) * (lengths - n_keep + 1)
    ).long()
    cols = torch.arange(seq.size(1), device=seq.device).unsqueeze(0)
    idx = (start.unsqueeze(1) + cols).clamp(max=seq.size(1) - 1)
    out = torch.where(cols < n_keep.unsqueeze(1), seq.gather(1, idx), 0)
    return out, torch.where(lengths > 0, n_keep, lengths)


def mask_items(seq, lengths, gamma: float, mask_id: int, generator=None):
    """Replace floor(gamma * n) randomly chosen real items with `mask_id`."""
    k = (gamma * lengths.float()).floor().long()
    chosen = random_positions(lengths, k, seq.size(1), generator)
    return torch.where(chosen, torch.full_like(seq, mask_id), seq), lengths.clone()


def reorder(seq, lengths, beta: float, generator=None):
    """Shuffle a random contiguous sub-sequence of floor(beta * n) items."""
    r = (beta * lengths.float()).floor().long()
    start = (torch.rand(lengths.shape, device=seq.device, generator=generator) * (lengths - r + 1)).long()
    cols = torch.arange(seq.size(1), device=seq.device).unsqueeze(0)
    inside = (cols >= start.unsqueeze(1)) & (cols < (start + r).unsqueeze(1))
    # positions outside keep their integer key; inside ones get a random key within the segment
    noise = torch.rand(seq.shape, device=seq.device, generator=generator)
    keys = torch.where(inside, start.unsqueeze(1).double() + noise.double() * r.unsqueeze(1), cols.double())
    return seq.gather(1, torch.sort(keys, dim=1, stable=True).indices), lengths.clone()


def nt_xent(
    a: torch.Tensor, b: torch.Tensor, tau: float = 1.0, sim: str = "dot", groups: torch.Tensor | None = None
) -> torch.Tensor:
    """NT-Xent / InfoNCE over 2N views: (a_i, b_i) are positives, every other view in the batch
    a negative (self-similarity excluded), dot or cosine similarity over temperature tau.
    `groups` ([2N] labels, e.g. next items, or a [2N, 2N] bool matrix): views sharing the anchor's
    label (or marked True in its row) are not negatives."""
    z = torch.cat([a, b], 0).float()
    if sim == "cos":
        z = F.normalize(z, dim=-1)
    logits = z @ z.T / tau
    n = a.size(0)
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    drop = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    if groups is not None:
        drop |= groups if groups.dim() == 2 else groups.unsqueeze(0) == groups.unsqueeze(1)
        drop[torch.arange(2 * n, device=z.device), labels] = False  # the positive always stays
    logits = logits.masked_fill(drop, float("-inf"))
    return F.cross_entropy(logits, labels)


class MaskTokenSASRec(SASRec):
    """SASRec whose inputs may also hold a [MASK] token (id n_items + 1), embedded by its own
    parameter so the output item table (and SASRec's CE loss and scores) stay n_items + 1 wide."""

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.mask_id = ctx.n_items + 1
        self.mask_emb = nn.Parameter(torch.randn(config.hidden) * 0.02)

    def embed(self, seq: torch.Tensor) -> torch.Tensor:
        is_mask = (seq == self.mask_id).unsqueeze(-1)
        emb = self.item_emb(seq.clamp(max=self.n_items))
        return torch.where(is_mask, self.mask_emb.to(emb.dtype), emb)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        # the padding mask only matters when the encoder is switched to bidirectional
        return self.encoder(self.embed(seq), padding=seq == 0)
