"""Pre-training augmentations as pure functions: sequence random dropout and complementary mixup.

Sequences are [B, L] item ids, left-aligned, 0 = padding after the real items. Randomness comes
from `generator` (None = torch's global generator); draws are made on the generator's device.
"""

from __future__ import annotations

import torch


def _rand(shape, ref: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else ref.device
    return torch.rand(shape, generator=generator, device=device).to(ref.device)


def draw_ratios(
    batch: int, max_ratio: float, per_sequence: bool, ref: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """[B] ratios ~ U(0, max_ratio): one draw shared by the batch (the code) or one per sequence."""
    u = _rand((batch if per_sequence else 1,), ref, generator) * max_ratio
    return u.expand(batch)


def sequence_dropout(
    seq: torch.Tensor, lengths: torch.Tensor, ratio: torch.Tensor, generator: torch.Generator | None = None,
    keep_end: str = "first",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop real items with probability ratio[b]; survivors keep their order and are left-aligned.
    Returns (new seq, new lengths).

    keep_end="first": the first item always survives (what the authors' code intends).
    keep_end="last": what their code does (MSM4SR.md section 2): it marks position 0 kept, then
    compacts with a scatter in which each dropped item is written over the kept item before it
    and the later write wins, so item j survives iff position j+1 was kept, and the last item
    always survives. Same draws, same survivor count; only which items survive differs."""
    if keep_end not in ("first", "last"):
        raise ValueError(f"keep_end must be 'first' or 'last', not {keep_end!r}")
    b, length = seq.shape
    real = torch.arange(length, device=seq.device)[None, :] < lengths[:, None]
    keep = (_rand((b, length), seq, generator) >= ratio[:, None]) & real
    keep[:, 0] = real[:, 0]
    if keep_end == "last":
        last = torch.arange(length, device=seq.device)[None, :] == (lengths - 1)[:, None]
        keep = torch.cat([keep[:, 1:], torch.zeros_like(keep[:, :1])], dim=1) | (last & real)
    pos = torch.cumsum(keep, dim=1) - 1
    pos = torch.where(keep, pos, torch.full_like(pos, length))  # dropped -> spill column
    out = torch.zeros(b, length + 1, dtype=seq.dtype, device=seq.device)
    out.scatter_(1, pos, torch.where(keep, seq, torch.zeros_like(seq)))
    return out[:, :length], keep.sum(1)


def mixup_mask(
    lengths: torch.Tensor, length: int, ratio: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """[B, L] bool: Bernoulli(ratio[b]) over real positions, False at padding."""
    real = torch.arange(length, device=lengths.device)[None, :] < lengths[:, None]
    return (_rand((len(lengths), length), lengths, generator) < ratio[:, None]) & real


def complementary_mixup(
    z_text: torch.Tensor, z_image: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """M^t = m*Z^v + (1-m)*Z^t, M^v = m*Z^t + (1-m)*Z^v: the same positions swap in both."""
    m = mask.unsqueeze(-1)
    return torch.where(m, z_image, z_text), torch.where(m, z_text, z_image)
