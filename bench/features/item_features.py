"""The tensors every content model reads: per item, slots of text and image-keyword vectors.

Row i is internal item i (row 0, the padding item, is all zeros with an all-False mask).
Text and image vectors live in one space (the same sentence encoder encodes both).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ItemFeatures:
    text: torch.Tensor  # [n_items + 1, S_t, d] float32
    text_mask: torch.Tensor  # [n_items + 1, S_t] bool, True = real slot
    image: torch.Tensor  # [n_items + 1, S_v, d]
    image_mask: torch.Tensor  # [n_items + 1, S_v]
    meta: dict = field(default_factory=dict)  # encoder, tagger, N, slot counts, content hash

    @property
    def dim(self) -> int:
        return int(self.text.shape[-1])

    @property
    def n_items(self) -> int:
        return int(self.text.shape[0]) - 1

    def mean(self, modality: str) -> torch.Tensor:
        """[n_items + 1, d] mean over an item's real slots (zeros where it has none)."""
        x, m = (self.text, self.text_mask) if modality == "text" else (self.image, self.image_mask)
        w = m.unsqueeze(-1).to(x.dtype)
        return (x * w).sum(1) / w.sum(1).clamp(min=1.0)

    @staticmethod
    def random(n_items: int, dim: int = 32, slots_t: int = 4, slots_v: int = 3, seed: int = 0) -> ItemFeatures:
        """Synthetic features for unit tests of model code."""
        g = torch.Generator().manual_seed(seed)
        tm = torch.rand(n_items + 1, slots_t, generator=g) < 0.7
        vm = torch.rand(n_items + 1, slots_v, generator=g) < 0.7
        tm[:, 0] = True
        tm[0], vm[0] = False, False
        text = torch.randn(n_items + 1, slots_t, dim, generator=g) * tm.unsqueeze(-1)
        image = torch.randn(n_items + 1, slots_v, dim, generator=g) * vm.unsqueeze(-1)
        return ItemFeatures(text, tm, image, vm, {"encoder": "random", "dim": dim})
