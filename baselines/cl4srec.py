"""CL4SRec (Xie et al. 2022): SASRec (CE) plus lambda * NT-Xent between two augmented views of
each training sequence.

Each view applies one augmentation drawn uniformly per row from crop (keep floor(eta n) items),
mask (floor(gamma n) items -> [MASK], id n_items + 1) and reorder (shuffle floor(beta n)
consecutive items). The augmentations are vectorised tensor ops that build new tensors, so the
source batch is never modified. The views are encoded by the same causal encoder (dropout on)
and represented by their last position; similarity is the dot product over tau (RecBole's
defaults). Trains on 'prefix' rows (one target per row), as the reference does.
"""

from __future__ import annotations

import torch
from pydantic import Field

from baselines.sasrec import SASRecConfig
from baselines.seqops import MaskTokenSASRec, crop, mask_items, nt_xent, reorder
from bench.nn.model import MODELS, last_position


class CL4SRecConfig(SASRecConfig):
    crop_eta: float = Field(0.6, gt=0.0, le=1.0)
    mask_gamma: float = Field(0.3, ge=0.0, lt=1.0)
    reorder_beta: float = Field(0.6, ge=0.0, le=1.0)
    cl_weight: float = Field(0.1, ge=0.0)  # lambda
    tau: float = Field(1.0, gt=0.0)
    similarity: str = Field("dot", pattern="^(dot|cos)$")

    @classmethod
    def search_space(cls):
        return {
            **SASRecConfig.search_space(),
            "cl_weight": ("loguniform", 0.01, 1.0),
            "crop_eta": ("float", 0.2, 0.8),
            "mask_gamma": ("float", 0.1, 0.7),
            "reorder_beta": ("float", 0.2, 0.8),
        }


@MODELS.register("cl4srec")
class CL4SRec(MaskTokenSASRec):
    Config = CL4SRecConfig
    label = "CL4SRec"
    sample_mode = "prefix"

    def augment(self, seq: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One random augmentation per row; returns new tensors (the input is never written)."""
        c = self.config
        views = [
            crop(seq, lengths, c.crop_eta),
            mask_items(seq, lengths, c.mask_gamma, self.mask_id),
            reorder(seq, lengths, c.reorder_beta),
        ]
        choice = torch.randint(0, 3, (len(seq),), device=seq.device)
        out = torch.stack([v[0] for v in views])[choice, torch.arange(len(seq), device=seq.device)]
        n = torch.stack([v[1] for v in views])[choice, torch.arange(len(seq), device=seq.device)]
        return out, n

    def loss(self, batch):
        ce = super().loss(batch)  # SASRec's CE at the row's target
        if self.config.cl_weight == 0:
            return ce
        seq, lengths = batch["input"], batch["lengths"]
        (s1, n1), (s2, n2) = self.augment(seq, lengths), self.augment(seq, lengths)
        z1 = last_position(self.encode(s1), n1)
        z2 = last_position(self.encode(s2), n2)
        return ce + self.config.cl_weight * nt_xent(z1, z2, self.config.tau, self.config.similarity)
