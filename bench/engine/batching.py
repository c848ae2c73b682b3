"""Vectorised construction of training samples and batches (no per-sample Python).

Two layouts of the same (history -> next item) pairs:
- prefix: one row per training target, its history truncated to max_len, loss at the last
  position only (RecBole's layout).
- packed: one row per user window, loss at every position. Left alignment plus causal
  attention make position j see exactly the prefix of length j+1, so this trains the same
  pairs with ~L times fewer rows. Targets beyond max_len get their own prefix rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from protocols.base import TrainSequences


def prefix_rows(train: TrainSequences, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows (input [N, L], target [N, L]) with one target per row at its last position."""
    lengths = train.lengths()
    n_targets = np.maximum(lengths - 1, 0)
    user = np.repeat(np.arange(len(lengths)), n_targets)
    # j = position of the target within its user's sequence (1..len-1)
    j = np.arange(n_targets.sum()) - np.repeat(np.cumsum(n_targets) - n_targets, n_targets) + 1
    return _rows(train, train.offsets[user], j, max_len, last_only=True)


def packed_rows(train: TrainSequences, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = train.lengths()
    has_target = lengths >= 2
    starts = train.offsets[:-1][has_target]
    first_j = np.minimum(lengths[has_target] - 1, max_len)  # targets 1..first_j fit one window
    inp, tgt = _rows(train, starts, first_j, max_len, last_only=False)
    # targets beyond max_len: one prefix row each
    extra = np.maximum(lengths - 1 - max_len, 0)
    if extra.sum() == 0:
        return inp, tgt
    user = np.repeat(np.arange(len(lengths)), extra)
    j = np.arange(extra.sum()) - np.repeat(np.cumsum(extra) - extra, extra) + max_len + 1
    inp2, tgt2 = _rows(train, train.offsets[user], j, max_len, last_only=True)
    return np.concatenate([inp, inp2]), np.concatenate([tgt, tgt2])


def _rows(train, starts, j, max_len, last_only):
    """Row i holds items [j_i - h_i, j_i) of the sequence starting at starts[i] (h_i = min(j_i, L))
    as input, and the items one step later as targets."""
    h = np.minimum(j, max_len)
    cols = np.arange(max_len)
    first = (starts + j - h)[:, None]
    valid = cols[None, :] < h[:, None]
    top = len(train.items) - 1
    inp = np.where(valid, train.items[np.minimum(first + cols, top)], 0)
    tgt = np.where(valid, train.items[np.minimum(first + cols + 1, top)], 0)
    if last_only:
        tgt = np.where(cols[None, :] == (h - 1)[:, None], tgt, 0)
    return inp.astype(np.int64), tgt.astype(np.int64)


def make_rows(train: TrainSequences, max_len: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    build = {"packed": packed_rows, "prefix": prefix_rows}[mode]
    inp, tgt = build(train, max_len)
    return torch.from_numpy(inp), torch.from_numpy(tgt)


def iterate_batches(
    inp: torch.Tensor, tgt: torch.Tensor, batch_size: int, generator: torch.Generator, bucket_by_length: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """Shuffled batches, each trimmed to its longest row.

    With `bucket_by_length`, rows are sorted by length within random pools of 50 batches and the
    batches are shuffled again: most rows are short, so this removes most padding work at the
    price of batches whose rows have similar lengths."""
    for idx in epoch_batches(inp, batch_size, generator, bucket_by_length):
        x = inp[idx]
        lengths = (x > 0).sum(1)
        width = max(int(lengths.max()), 1)  # trailing padding columns change nothing: drop them
        yield {"input": x[:, :width], "target": tgt[idx, :width], "lengths": lengths}


def epoch_batches(
    inp: torch.Tensor, batch_size: int, generator: torch.Generator, bucket_by_length: bool = False,
    lengths: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """One epoch's row indices, batch by batch (the draws from `generator` that iterate_batches
    makes, so both give the same batches). `lengths` [N]: the rows' lengths if already known."""
    order = torch.randperm(len(inp), generator=generator)
    if not bucket_by_length:
        return list(order.split(batch_size))
    lengths = (inp > 0).sum(1) if lengths is None else lengths
    pool = batch_size * 50
    batches = []
    for p in order.split(pool):
        p = p[torch.argsort(lengths[p], stable=True)]
        batches.extend(p.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]


class ResidentRows:
    """Training rows moved to the device once per fit; each epoch's batches are gathered there.

    The data order is drawn on the host exactly as iterate_batches draws it, and each batch's
    width (its longest row) comes from the host copy of the lengths, so no step has to ask the
    device anything: the batches are the tensors iterate_batches yields, computed on the device.
    `fixed_shape`: every batch is batch_size rows x the full width, so a step can be captured
    (CUDA graphs, torch.compile without recompiles); the partial batches are dropped, and how many
    rows that left out is returned (which rows changes every epoch with the data order)."""

    def __init__(self, inp: torch.Tensor, tgt: torch.Tensor, device: torch.device):
        self.lengths = (inp > 0).sum(1)  # host copy: batch widths without a device round-trip
        self.device = torch.device(device)
        self.inp, self.tgt = inp.to(self.device), tgt.to(self.device)
        self.device_lengths = self.lengths.to(self.device)

    def __len__(self) -> int:
        return len(self.lengths)

    def epoch(
        self, batch_size: int, generator: torch.Generator, bucket_by_length: bool = False, fixed_shape: bool = False
    ) -> tuple[EpochBatches, int]:
        """-> (the epoch's batches, gathered on the device as they are iterated; rows dropped to
        keep every batch full)."""
        batches = epoch_batches(self.inp, batch_size, generator, bucket_by_length, self.lengths)
        dropped = 0
        if fixed_shape:
            dropped = sum(len(b) for b in batches if len(b) < batch_size)
            batches = [b for b in batches if len(b) == batch_size]
        if not batches:
            return EpochBatches(self, torch.zeros(0, dtype=torch.long), [], []), dropped
        order = torch.cat(batches)
        sizes = [len(b) for b in batches]
        if fixed_shape:
            widths = [self.inp.shape[1]] * len(batches)
        else:  # each batch trimmed to its longest row, as iterate_batches does, from the host lengths
            starts = np.cumsum([0, *sizes[:-1]])
            widths = np.maximum(np.maximum.reduceat(self.lengths[order].numpy(), starts), 1).tolist()
        if self.device.type == "cuda":  # one asynchronous copy of the epoch's order
            order = order.pin_memory().to(self.device, non_blocking=True)
        else:
            order = order.to(self.device)
        return EpochBatches(self, order, sizes, widths), dropped


class EpochBatches:
    """An epoch's batches, each gathered on the device when reached (one copy of the rows at a
    time, not a second copy of the whole training set)."""

    def __init__(self, rows: ResidentRows, order: torch.Tensor, sizes: list[int], widths: list[int]):
        self.rows, self.order, self.sizes, self.widths = rows, order, sizes, widths

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        start = 0
        for size, width in zip(self.sizes, self.widths):
            idx = self.order[start : start + size]
            start += size
            x = self.rows.inp[idx]
            yield {"input": x[:, :width], "target": self.rows.tgt[idx, :width], "lengths": self.rows.device_lengths[idx]}
