"""DuoRec (Qiu et al. 2022): SASRec (CE) plus lambda * InfoNCE between a dropout view of each
training sequence (a second forward pass, the unsupervised augmentation) and a supervised
positive: a different training sequence with the same next item.

The reference draws the supervised positive from the whole training set. The model never sees
the training set, so it keeps a ring buffer (`positive_bank` rows) of the training rows it has
been given; each batch is added to it and every row draws its positive among the stored rows
with the same target whose sequence differs from its own (up to `positive_tries` uniform draws).
After the first `positive_bank` rows (on scientific: the first epoch) this is close to the
reference's training-set-wide sampling (99.5% of scientific's rows have a partner; in a
256-row batch alone only ~12% do). positive_bank = 0 uses in-batch partners only. Rows without
a partner use their own sequence (a further dropout view), as the reference does for a target
that occurs once. The bank is part of the state_dict (int32 ids, ~13 MB at the default size)
so a resumed run continues with the same bank.

InfoNCE is NT-Xent over the 2B views (dot similarity over tau, self-similarity excluded), as
in the reference's 'us_x' mode. Trains on 'prefix' rows (one target per row), as it does.

The reference's default (dot, tau 1) learns late: the encoder ends in a LayerNorm, so every view
has norm ~sqrt(hidden) and the logits span +-hidden; the InfoNCE starts at 14-21 nats and first
makes the sequence representations alike, so CE sits near the popularity ranking for a while
before it descends. Measured at the cpu budget (seed 0, epochs 1-based): on scientific_mm validation
Recall@20 stayed within 0.095-0.097 from epoch 4 to 15, then rose to 0.20 by epoch 31 (SASRec's
level); on Scientific it stayed within 0.053-0.058 for 5 epochs, then rose to 0.164. A patience
of 5 ended every scientific_mm run on that plateau (test Recall@10 0.044); with patience 20 and
up to 100 epochs (its declared need, `training_need_for`, which budgets never cut) the three
seeds reach 0.1446 +- 0.0009 (best epochs 59-77), above SASRec's 0.1409. similarity=cos
with tau=0.1 bounds the logits at +-10 and learns from the first epoch, like SASRec.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from baselines.sasrec import SASRec, SASRecConfig
from baselines.seqops import last_target, nt_xent
from bench.nn.model import MODELS, last_position


class DuoRecConfig(SASRecConfig):
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    cl_weight: float = Field(0.1, ge=0.0)  # lambda
    tau: float = Field(1.0, gt=0.0)
    similarity: str = Field("dot", pattern="^(dot|cos)$")
    positive_bank: int = Field(65536, ge=0)  # training rows remembered for supervised positives
    positive_tries: int = Field(8, ge=1)
    # False: every other view of the batch is a negative, as in the reference. True: views whose
    # next item equals the anchor's are left out of its negatives (they are positives by
    # DuoRec's own definition)
    mask_same_target: bool = False
    # True: views of identical item sequences (a quarter of scientific_mm's prefix rows repeat
    # another row's input) are left out of each other's negatives: only dropout tells them apart
    mask_same_input: bool = False

    @classmethod
    def search_space(cls):
        return {
            **SASRecConfig.search_space(),
            "dropout": ("float", 0.1, 0.5),
            "cl_weight": ("loguniform", 0.01, 1.0),
            # the reference's dot / tau 1 learns late (module docstring): tuning chooses between
            # it and bounded cosine logits
            "similarity": ("categorical", ["dot", "cos"]),
            "tau": ("loguniform", 0.05, 1.0),
        }


def supervised_partner(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row, a random other row of the batch with the same target ([B] indices) and
    whether one was found; rows without one get their own index."""
    b = len(targets)
    same = targets.unsqueeze(0) == targets.unsqueeze(1)
    same &= ~torch.eye(b, dtype=torch.bool, device=targets.device)
    keys = torch.where(same, torch.rand(b, b, device=targets.device), -1.0)
    found = same.any(1)
    idx = torch.where(found, keys.argmax(1), torch.arange(b, device=targets.device))
    return idx, found


class SequenceBank(nn.Module):
    """Ring buffer of training rows (sequence, length, target) for supervised positives."""

    def __init__(self, size: int, max_len: int):
        super().__init__()
        self.size = size
        # persistent buffers: a checkpoint resumes with the same bank (int32 ids keep it small)
        self.register_buffer("seq", torch.zeros(size, max_len, dtype=torch.int32))
        self.register_buffer("target", torch.zeros(size, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def _widen(self, seq: torch.Tensor) -> torch.Tensor:
        """Batches may be trimmed to their longest row: pad back to max_len columns."""
        return F.pad(seq, (0, self.seq.size(1) - seq.size(1)))

    @torch.no_grad()
    def add(self, seq: torch.Tensor, target: torch.Tensor) -> None:
        seq, target = self._widen(seq[-self.size :]), target[-self.size :]
        idx = (self.ptr + torch.arange(len(seq), device=seq.device)) % self.size
        self.seq[idx] = seq.to(self.seq.dtype)
        self.target[idx] = target
        self.ptr.copy_((self.ptr + len(seq)) % self.size)
        self.filled.clamp_(max=self.size - len(seq)).add_(len(seq))

    @torch.no_grad()
    def partners(self, seq: torch.Tensor, target: torch.Tensor, tries: int):
        """(positive sequences [B, L], found [B], their targets [B]): a stored row with the same
        target and a different sequence; the row's own sequence where none was drawn."""
        width = seq.size(1)
        seq = self._widen(seq)
        filled = int(self.filled)
        stored_t = self.target[:filled]
        order = stored_t.argsort()
        sorted_t = stored_t[order]
        lo = torch.searchsorted(sorted_t, target)
        k = torch.searchsorted(sorted_t, target, right=True) - lo
        draw = lo.unsqueeze(1) + (torch.rand(len(seq), tries, device=seq.device) * k.unsqueeze(1)).long()
        cand = order[draw.clamp(max=max(filled - 1, 0))]  # [B, T]
        differs = (self.seq[cand] != seq.to(self.seq.dtype).unsqueeze(1)).any(-1) & (k > 0).unsqueeze(1)
        found = differs.any(1)
        pick = cand.gather(1, differs.long().argmax(1, keepdim=True)).squeeze(1)
        out = torch.where(found.unsqueeze(1), self.seq[pick].to(seq.dtype), seq)
        out = out[:, : max(width, int((out > 0).sum(1).max()))]  # as wide as the longest row
        return out, found, torch.where(found, self.target[pick], target)


@MODELS.register("duorec")
class DuoRec(SASRec):
    Config = DuoRecConfig
    label = "DuoRec"
    sample_mode = "prefix"
    trainer_defaults = {"train": {"patience": 20}}  # a plain run gets the need of the default setting

    @classmethod
    def training_need_for(cls, config: DuoRecConfig) -> dict[str, dict[str, int]]:
        # dot logits: a plateau of up to ~12 epochs before CE descends (module docstring)
        return {"train": {"epochs": 100, "patience": 20}} if config.similarity == "dot" else {}

    def __init__(self, config: DuoRecConfig, ctx):
        super().__init__(config, ctx)
        self.bank = SequenceBank(config.positive_bank, ctx.max_len) if config.positive_bank else None
        self.loss_parts: dict[str, torch.Tensor] = {}

    def positives(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Supervised positive sequences [B, L] (new tensors), whether each row found one, and
        the positives' next items."""
        seq, target = batch["input"], last_target(batch)
        if self.bank is None:
            partner, found = supervised_partner(target)
            return seq[partner], found, target[partner]  # advanced indexing copies
        self.bank.add(seq, target)
        return self.bank.partners(seq, target, self.config.positive_tries)

    def not_negatives(self, batch, sem: torch.Tensor, sem_target: torch.Tensor) -> torch.Tensor | None:
        """[2B, 2B] bool: pairs of views kept out of each other's InfoNCE negatives (None: none)."""
        out = None
        if self.config.mask_same_target:
            t = torch.cat([last_target(batch), sem_target])
            out = t.unsqueeze(0) == t.unsqueeze(1)
        if self.config.mask_same_input:
            seq = batch["input"]
            width = max(seq.size(1), sem.size(1))
            views = torch.cat([F.pad(seq, (0, width - seq.size(1))), F.pad(sem, (0, width - sem.size(1)))])
            ids = torch.unique(views, dim=0, return_inverse=True)[1]
            same = ids.unsqueeze(0) == ids.unsqueeze(1)
            out = same if out is None else out | same
        return out

    def loss(self, batch):
        ce = super().loss(batch)
        if self.config.cl_weight == 0:
            return ce
        seq, lengths = batch["input"], batch["lengths"]
        z_unsup = last_position(self.encode(seq), lengths)  # dropout view of each sequence
        sem, found, sem_target = self.positives(batch)
        z_sup = last_position(self.encode(sem), (sem > 0).sum(1))
        cl = nt_xent(z_unsup, z_sup, self.config.tau, self.config.similarity, self.not_negatives(batch, sem, sem_target))
        # detached components of the last loss, for diagnostics (benchmarks/baseline_diag.py)
        self.loss_parts = {"ce": ce.detach(), "cl": cl.detach(), "partner_share": found.float().mean()}
        return ce + self.config.cl_weight * cl
