"""Cross-entropy over every item without holding the [rows, items] logits at once.

`softmax_ce(h, table, target)` = F.cross_entropy(h @ table.T, target). Below `max_logits`
scores it is exactly that (fastest for catalogues of a few thousand items); above, the item
table is processed in chunks: the forward keeps a running log-sum-exp per row, the backward
recomputes each chunk's softmax, so memory is O(rows x chunk) instead of O(rows x items).
With 100k items a training batch of 2,560 targets needs 1 GB of float32 logits dense (2 GB with
their gradient); chunked, 2,560 x 8,192 x 4 bytes = 84 MB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.nn.static import shape_static

MAX_DENSE_LOGITS = 2**25  # 128 MiB of float32 logits
CHUNK_ITEMS = 8192


class _ChunkedSoftmaxCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, table: torch.Tensor, target: torch.Tensor, chunk: int) -> torch.Tensor:
        lse = torch.full((h.size(0),), float("-inf"), device=h.device, dtype=torch.float32)
        for part in table.split(chunk):
            lse = torch.logaddexp(lse, torch.logsumexp(h @ part.T, dim=1))
        picked = (h * table[target]).sum(1)
        ctx.save_for_backward(h, table, target, lse)
        ctx.chunk = chunk
        return (lse - picked).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, table, target, lse = ctx.saved_tensors
        g = grad / h.size(0)
        dh = torch.zeros_like(h)
        dtable = torch.zeros_like(table)
        start = 0
        for part in table.split(ctx.chunk):
            p = torch.exp(h @ part.T - lse.unsqueeze(1)) * g  # d loss / d logits of this chunk
            dh += p @ part
            dtable[start : start + len(part)] = p.T @ h
            start += len(part)
        dh -= g * table[target]
        dtable.index_add_(0, target, -g * h)
        return dh, dtable, None, None


def next_item_ce(
    out: torch.Tensor, target: torch.Tensor, items: torch.Tensor, classes: torch.Tensor | None = None
) -> torch.Tensor:
    """The harness's training loss for every CE model: outputs `out` [B, L, H] at the positions
    that have a target (`target` [B, L], 0 = none) against the item table `items` [n_items + 1, H]
    (row 0, the padding item, is never a class; nor is an item outside `classes`, see
    ModelContext.train_classes).

    On an accelerator, or while torch.compile traces, it takes the shape-static form below
    (bench.nn.static: the selection here would make the host wait for the device every step)."""
    if shape_static(out) and target.numel() * (items.size(0) - 1) <= MAX_DENSE_LOGITS:
        return static_next_item_ce(out, target, items, classes)
    keep = target > 0
    table, tgt = class_table(items, target[keep], classes)
    return softmax_ce(out[keep], table, tgt)


def static_next_item_ce(
    out: torch.Tensor, target: torch.Tensor, items: torch.Tensor, classes: torch.Tensor | None = None
) -> torch.Tensor:
    """next_item_ce without data-dependent shapes (no host sync; capturable by CUDA graphs): every
    position is scored against every item, positions without a target weigh 0 and items outside
    `classes` get -inf logits (they drop out of the softmax exactly as if never a column)."""
    h = out.reshape(-1, out.size(-1))
    return masked_next_item_ce((h @ items[1:].T).float(), target, classes)


def masked_next_item_ce(logits: torch.Tensor, target: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
    """Mean CE of [positions, n_items] logits (column j = item j + 1) over the positions with a
    target (`target` any shape, 0 = none), items outside `classes` at -inf: no data-dependent shape."""
    t = target.reshape(-1)
    keep = t > 0
    if classes is not None:
        logits = logits.masked_fill(~classes[1:], float("-inf"))
    loss = F.cross_entropy(logits, (t - 1).clamp(min=0), reduction="none")
    # where, not a product: a padding position's stand-in target may be a masked class (inf loss)
    return torch.where(keep, loss, 0.0).sum() / keep.sum().clamp(min=1)


def class_table(
    items: torch.Tensor, target: torch.Tensor, classes: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of `items` [n_items + 1, ...] that are training classes (never row 0, the padding
    item; only `classes` [n_items + 1] bool when given) and the targets (item ids) as row indices."""
    if classes is None:
        return items[1:], target - 1
    cls = classes.clone()
    cls[0] = False
    row = torch.cumsum(cls, 0) - 1  # item id -> its row among the classes
    return items[cls], row[target]


def softmax_ce(
    h: torch.Tensor, table: torch.Tensor, target: torch.Tensor,
    max_logits: int | None = None, chunk: int = CHUNK_ITEMS,
) -> torch.Tensor:
    """Mean CE of rows `h` [N, H] against classes `table` [C, H] (float32 arithmetic), `target` [N]
    in 0..C-1. `max_logits` defaults to the module's MAX_DENSE_LOGITS (read at call time)."""
    limit = MAX_DENSE_LOGITS if max_logits is None else max_logits
    if h.size(0) * table.size(0) <= limit:
        return F.cross_entropy((h @ table.T).float(), target)
    with torch.autocast(h.device.type, enabled=False):
        return _ChunkedSoftmaxCE.apply(h.float(), table.float(), target, chunk)
