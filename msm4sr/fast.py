"""CPU training-speed paths of MSM4SR: the same functions as the modules they stand in for.

Profiling one-thread pre-training and fine-tuning epochs on Scientific showed two costs that the
arithmetic does not need:

- Dropout masks. torch draws a CPU dropout mask one Bernoulli sample at a time (~16 ns per element
  here), which was ~30% of a training step: MSM4SR drops out [positions x 8 experts x 64] adaptor
  outputs and every Transformer activation, attention weights included. `dropout` draws the mask
  as 16-bit uniforms, four per 64-bit word of torch's generator (~8x cheaper): Bernoulli masks with
  the drop probability rounded to a multiple of 1/65536 (p=0.2 -> 0.199997, survivors scaled by the
  matching 1/(1-p)), deterministic under torch.manual_seed, but not the stream of torch's dropout.
- Padding. A batch is padded to its longest row, and most rows are short (random pre-training
  batches of prefix rows are ~6x padding). With left-aligned rows and causal attention a real
  position never sees padding, so `encode_grouped` runs the Transformer on groups of rows of
  similar length, each cut to its own longest row (rows are independent: the same function), and
  when only each row's last position is needed (pre-training), the last layer computes queries,
  attention and feed-forward for that position alone.

On other devices (cuda) both fall back to torch's own kernels and the padded batch, unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MASK_BITS = 16
# a group costs its rows x its longest row, plus this many positions' worth of per-call overhead
GROUP_OVERHEAD = 192


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout (zero with probability p, scale the rest by 1/(1-p)); see the module doc."""
    if not training or p == 0.0 or x.numel() == 0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, True)
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
    bits = words.view(torch.int16)[:n].view(x.shape)  # uniform on [-32768, 32767]
    keep = bits >= round(p * 2**MASK_BITS) - 2 ** (MASK_BITS - 1)
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - round(p * 2**MASK_BITS) / 2**MASK_BITS))


class Dropout(nn.Dropout):
    """nn.Dropout drawing its CPU mask with `dropout` (same parameters, same state_dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def length_groups(lengths: torch.Tensor, overhead: int = GROUP_OVERHEAD) -> list[tuple[torch.Tensor, int]]:
    """Rows sorted by length, cut into groups that minimise sum(rows x longest) + overhead per
    group (exact, by dynamic programming over the distinct lengths) -> [(row indices, width)]."""
    lens = lengths.clamp(min=1)
    order = torch.argsort(lens, stable=True)
    values, counts = torch.unique_consecutive(lens[order], return_counts=True)
    values, counts = values.tolist(), counts.tolist()
    cum = [0]
    for c in counts:
        cum.append(cum[-1] + c)
    k = len(values)
    best, cut = [0.0] + [math.inf] * k, [0] * (k + 1)
    for i in range(1, k + 1):  # best[i]: cheapest cover of the i shortest distinct lengths
        for j in range(i):
            cost = best[j] + (cum[i] - cum[j]) * values[i - 1] + overhead
            if cost < best[i]:
                best[i], cut[i] = cost, j
    groups, i = [], k
    while i > 0:
        j = cut[i]
        groups.append((order[cum[j] : cum[i]], values[i - 1]))
        i = j
    return groups[::-1]


def _attention(layer: nn.TransformerEncoderLayer, q_in: torch.Tensor, kv_in: torch.Tensor,
               mask: torch.Tensor, training: bool) -> torch.Tensor:
    """nn.MultiheadAttention (packed in-projection, batch_first) with an additive mask and our
    dropout on the attention weights. q_in [n, Lq, H], kv_in [n, Lk, H], mask [.., Lq, Lk]."""
    attn = layer.self_attn
    h, heads = kv_in.shape[-1], attn.num_heads
    d = h // heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    n, lq, lk = q_in.shape[0], q_in.shape[1], kv_in.shape[1]
    if q_in is kv_in:
        q, k, v = F.linear(kv_in, w, b).chunk(3, dim=-1)
    else:
        q = F.linear(q_in, w[:h], b[:h])
        k, v = F.linear(kv_in, w[h:], b[h:]).chunk(2, dim=-1)
    q = q.reshape(n, lq, heads, d).transpose(1, 2)
    k = k.reshape(n, lk, heads, d).transpose(1, 2)
    v = v.reshape(n, lk, heads, d).transpose(1, 2)
    scores = torch.softmax((q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d)) + mask, dim=-1)
    out = dropout(scores, attn.dropout, training) @ v  # [n, heads, Lq, d]
    return attn.out_proj(out.transpose(1, 2).reshape(n, lq, h))


def _layer(layer: nn.TransformerEncoderLayer, x: torch.Tensor, mask: torch.Tensor, training: bool,
           query: torch.Tensor | None = None) -> torch.Tensor:
    """Post-LN nn.TransformerEncoderLayer; with `query` ([n, 1, H]) only that position is computed."""
    q = x if query is None else query
    a = _attention(layer, q, x, mask, training)
    q = layer.norm1(q + dropout(a, layer.dropout1.p, training))
    ff = layer.linear2(dropout(layer.activation(layer.linear1(q)), layer.dropout.p, training))
    return layer.norm2(q + dropout(ff, layer.dropout2.p, training))


def supported(encoder, x: torch.Tensor) -> bool:
    """Whether `encode_grouped` reproduces this SequenceTransformer (causal, post-LN, CPU)."""
    layers = encoder.encoder.layers
    return (x.device.type == "cpu" and encoder.causal and encoder.encoder.norm is None
            and all(not layer.norm_first and layer.activation is F.gelu for layer in layers))


def encode_grouped(encoder, x: torch.Tensor, lengths: torch.Tensor, last_only: bool) -> torch.Tensor:
    """SequenceTransformer.forward(x) at the real positions, computed per length group.
    x [B, L, H] left-aligned; -> [B, H] at each row's last real position (last_only), else
    [B, L, H] whose padding positions hold no meaningful values (read the real ones only)."""
    b, length, hidden = x.shape
    training = encoder.training
    layers = encoder.encoder.layers
    pos = encoder.position.weight[:length]
    parts, rows = [], []
    out = None if last_only else x.new_zeros(b, length, hidden)
    for idx, width in length_groups(lengths):
        h = encoder.norm(x[idx, :width] + pos[:width])
        h = dropout(h, encoder.dropout.p, training)
        causal = torch.full((width, width), float("-inf"), dtype=h.dtype, device=h.device).triu_(1)
        last_layer = len(layers) - 1 if last_only else len(layers)
        for layer in layers[:last_layer]:
            h = _layer(layer, h, causal, training)
        if last_only:
            at = (lengths[idx] - 1).clamp(min=0)
            query = h[torch.arange(len(idx), device=h.device), at].unsqueeze(1)  # [n, 1, H]
            # the last query sees keys 0..at (its causal row); later (padding) keys are masked
            mask = torch.where(torch.arange(width, device=h.device)[None, :] <= at[:, None], 0.0, float("-inf"))
            if layers[last_layer:]:
                query = _layer(layers[-1], h, mask[:, None, None, :].to(h.dtype), training, query)
            parts.append(query.squeeze(1))
            rows.append(idx)
        else:
            out[idx, :width] = h
    if not last_only:
        return out
    order = torch.cat(rows)
    return torch.cat(parts)[torch.argsort(order)]
