"""UniSRec (Hou et al., KDD 2022): universal item representations from frozen text vectors through
an MoE adaptor of parametric-whitening experts, a SASRec encoder, contrastive pre-training, and
inductive or transductive fine-tuning. Follows the authors' code (RUCAIBox/UniSRec, unisrec.py,
data/transform.py, finetune.py) where the paper leaves details open.

Item side: each modality's frozen item vector x (ItemFeatures.mean(m), a non-persistent buffer)
goes through its own ParametricWhiteningMoE; the item vector is the SUM of the modalities'
adaptor outputs (default text only, as the paper; ("image",) and ("text", "image") use the
image-keyword vectors of the same encoder). Fine-tuning "transductive" adds an ID embedding.

Pre-training ("prefix" rows): sequence-item contrastive (each sequence's last output vs the
batch's target items, both L2-normalised, tau) + lam * sequence-sequence contrastive: the
ORIGINAL sequence's output is the anchor and the item-dropped view of the same input sequence
(each item dropped with prob item_drop, the first item always kept, survivors left-aligned) the
positive; the other rows' dropped views are the negatives. One direction only, as the code. Rows
that share the next item get logit 0 in both tasks (the code's `same_pos_id`; same_target="mask"
removes them instead).
Deviation: the code draws "word drop" (a second text embedding of the item, `plm_suffix_aug`)
instead of item drop for 10% of batches; the feature store holds one text encoding, so item drop
is used always.

Fine-tuning: CE over all items of cosine(seq, item) / tau. With freeze_encoder (default) and a
pre-trained encoder, the position embeddings and Transformer layers get requires_grad False,
exactly what the code's fix_enc freezes: its input LayerNorm (our SequenceTransformer.norm) stays
trainable, as do the adaptor(s) and the ID table. Without pre-training nothing is frozen (the code
only freezes when it loads a checkpoint).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from baselines.seqops import last_target
from bench.errors import BenchError
from bench.features.inputs import FeatureInputs, Modality
from bench.nn.model import (
    MODELS,
    ModelConfig,
    ModelContext,
    PretrainFinetune,
    full_precision,
    last_position,
)
from bench.nn.softmax_ce import next_item_ce
from bench.nn.transformer import SequenceTransformer, init_weights
from msm4sr.augment import sequence_dropout
from msm4sr.losses import nip_loss, normalize, same_target_pairs


class UniSRecConfig(FeatureInputs, ModelConfig):
    hidden: int = Field(64, gt=0)  # the paper's 300; 64 for parity with the other baselines
    layers: int = Field(2, gt=0)
    heads: int = Field(2, gt=0)
    ffn: int = Field(256, gt=0)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)  # Transformer hidden + attention dropout
    n_experts: int = Field(8, gt=0)
    adaptor_dropout: float = Field(0.2, ge=0.0, lt=1.0)  # on the adaptor input, per expert
    modalities: tuple[Modality, ...] = ("text",)  # the paper's text-only default
    # --- pre-training ---
    pretrain: bool = True
    item_drop: float = Field(0.2, ge=0.0, lt=1.0)  # item-drop ratio of the sequence-sequence view
    lam: float = Field(1e-3, ge=0.0)  # weight of the sequence-sequence loss
    tau: float = Field(0.07, gt=0.0)  # temperature of both contrastive losses and fine-tuning logits
    same_target: Literal["logit0", "mask"] = "logit0"  # in-batch rows sharing a target (code: logit0)
    # --- fine-tuning ---
    mode: Literal["inductive", "transductive"] = "transductive"
    freeze_encoder: bool = True

    @classmethod
    def without_ids(cls) -> dict:
        return {"mode": "inductive"}

    @classmethod
    def search_space(cls):
        return {
            "dropout": ("float", 0.2, 0.5),
            "adaptor_dropout": ("float", 0.0, 0.4),
            "lam": ("categorical", [1e-4, 1e-3, 1e-2]),
        }


class ParametricWhiteningMoE(nn.Module):
    """sum_k g_k(x) W_k (dropout_k(x) - b_k) with g = softmax(x W_g + noise), noise =
    N(0, 1) * (softplus(x W_noise) + noise_eps) in training only (the code's noisy gating; its
    epsilon 1e-2 included). Each expert draws its own dropout mask, as the code's K PWLayers do.
    The K experts are batched parameters: weight [K, out, dim], bias [K, dim]."""

    def __init__(self, dim: int, out: int, n_experts: int = 8, dropout: float = 0.2, noise_eps: float = 1e-2):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_experts, out, dim))
        self.bias = nn.Parameter(torch.zeros(n_experts, dim))  # the code's zero init
        self.w_gate = nn.Parameter(torch.zeros(dim, n_experts))  # zero init: equal gates at the start
        self.w_noise = nn.Parameter(torch.zeros(dim, n_experts))
        self.p = dropout
        self.noise_eps = noise_eps
        nn.init.normal_(self.weight, 0.0, 0.02)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """[..., dim] -> [..., K]; the gate sees the un-dropped input."""
        logits = x @ self.w_gate.to(x.dtype)
        if self.training:
            std = F.softplus(x @ self.w_noise.to(x.dtype)) + self.noise_eps
            logits = logits + torch.randn_like(logits) * std
        return torch.softmax(logits, dim=-1)

    def experts(self, x: torch.Tensor) -> torch.Tensor:
        """[..., dim] -> [..., K, out]: W_k (dropout_k(x) - b_k)."""
        w, b = self.weight.to(x.dtype), self.bias.to(x.dtype)
        if self.training and self.p > 0:
            k, d = b.shape
            # dropout of the expanded view: an independent mask per expert and element
            xk = F.dropout(x.unsqueeze(-2).expand(*x.shape[:-1], k, d), self.p, training=True)
            return torch.einsum("...kd,kod->...ko", xk - b, w)
        # no dropout: one product with x, and W_k b_k once per expert
        return torch.einsum("...d,kod->...ko", x, w) - torch.einsum("kd,kod->ko", b, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.gates(x).unsqueeze(-1) * self.experts(x)).sum(-2)


@MODELS.register("unisrec")
class UniSRec(PretrainFinetune):
    Config = UniSRecConfig
    label = "UniSRec"
    # config fields that only act once pre-training is over: they never key the pre-trained stage
    finetune_only = frozenset({"pretrain", "mode", "freeze_encoder"})
    # the ID table; the feature buffers are non-persistent (never in a state_dict) and listed so
    # that a state saved by other means still transfers
    dataset_specific = ("id_emb.", "feat_")
    trainer_defaults = {
        # random batches: the contrastive losses take negatives from the batch, which length
        # buckets would change (the code: batch 8192, 300 epochs)
        "pretrain": {"lr": 1e-3, "batch_size": 1024, "epochs": 50, "patience": 10},
        # packed rows, SASRec's batch; the code: lr 1e-3, early stopping after 10 epochs
        "finetune": {"lr": 1e-3, "batch_size": 256, "epochs": 100, "patience": 10},
    }

    def __init__(self, config: UniSRecConfig, ctx: ModelContext):
        super().__init__(config, ctx)
        self.modalities = tuple(config.modalities)
        feats = ctx.features
        if feats is None:
            raise BenchError(
                "unisrec needs item features (ctx.features is None): build the feature store first"
            )
        if feats.n_items != ctx.n_items:
            raise BenchError(f"item features cover {feats.n_items} items, the dataset has {ctx.n_items}")
        for m in self.modalities:
            self.register_buffer(f"feat_{m}", feats.mean(m).float().contiguous(), persistent=False)
        self.adaptor = nn.ModuleDict({
            m: ParametricWhiteningMoE(feats.dim, config.hidden, config.n_experts, config.adaptor_dropout)
            for m in self.modalities
        })  # fmt: skip
        self.encoder = SequenceTransformer(
            config.hidden, config.layers, config.heads, config.ffn, config.dropout, ctx.max_len
        )
        init_weights(self.encoder)
        self.id_emb = None
        if config.mode == "transductive":
            self.id_emb = nn.Embedding(ctx.n_items + 1, config.hidden, padding_idx=0)
            nn.init.normal_(self.id_emb.weight, 0.0, 0.02)
            with torch.no_grad():
                self.id_emb.weight[0].zero_()
        self._cache: tuple | None = None  # (key, item table) for repeated eval scoring
        self.loss_parts: dict[str, torch.Tensor] = {}  # detached components of the last pre-training loss
        self.set_stage(self.stage)

    # ----- stages -----
    def set_stage(self, stage: str) -> None:
        super().set_stage(stage)
        frozen = stage == "finetune" and self.config.freeze_encoder and self.config.pretrain
        for part in self.frozen_parts():
            part.requires_grad_(not frozen)
        self._cache = None

    def frozen_parts(self) -> tuple[nn.Module, ...]:
        """What the code's fix_enc freezes: position embeddings and the Transformer layers."""
        return self.encoder.position, self.encoder.encoder

    @property
    def uses_ids(self) -> bool:
        return self.stage == "finetune" and self.id_emb is not None

    # ----- item side -----
    def item_reps(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Item vectors [..., H] of `ids` (None = the whole table, row 0 = padding): the sum of the
        modalities' adaptor outputs, + the ID embedding when fine-tuning transductively. In
        training every occurrence draws its own adaptor dropout and gate noise, as the code."""
        z = None
        for m in self.modalities:
            x = getattr(self, f"feat_{m}")
            y = self.adaptor[m](x if ids is None else x[ids])
            z = y if z is None else z + y
        if self.uses_ids:
            z = z + (self.id_emb.weight if ids is None else self.id_emb(ids))
        return z

    def seq_input(self, seq: torch.Tensor) -> torch.Tensor:
        """[B, L] ids -> [B, L, H] encoder input; adapted at real positions only (padding comes after
        the last real item, so under causal attention it never reaches a real position)."""
        real = seq > 0
        z = self.item_reps(seq[real])
        out = z.new_zeros(*seq.shape, z.shape[-1])
        out[real] = z
        return out

    def encode(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return last_position(self.encoder(self.seq_input(seq)), lengths)

    # ----- scoring -----
    def _cache_key(self) -> tuple:
        """Changes whenever a tensor the item table depends on is updated in place, moved or loaded."""
        tensors = [*self.adaptor.parameters(), *(getattr(self, f"feat_{m}") for m in self.modalities)]
        if self.id_emb is not None:
            tensors.append(self.id_emb.weight)
        return (self.stage, *((t.data_ptr(), t._version) for t in tensors))

    def score(self, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """cosine(sequence output, item vector) for every item: [B, n_items + 1]."""
        cacheable = not self.training and not torch.is_grad_enabled()
        key = self._cache_key() if cacheable else None
        if cacheable and self._cache is not None and self._cache[0] == key:
            table = self._cache[1]
        else:
            table = self.item_reps()
            if cacheable:
                self._cache = (key, table)
        h = last_position(self.encoder(table[history]), lengths)
        with full_precision(h.device):
            return normalize(h) @ normalize(table).T

    # ----- losses -----
    def seq_seq_view(self, seq: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The item-dropped view (new tensors; the batch is never written)."""
        ratio = torch.full((len(seq),), self.config.item_drop, device=seq.device)
        return sequence_dropout(seq, lengths, ratio)

    def pretrain_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        cfg = self.config
        seq, lengths = batch["input"], batch["lengths"]
        target = last_target(batch)
        if bool(((target <= 0) | ((batch["target"] > 0).sum(1) != 1)).any()):
            raise ValueError(
                "pre-training needs 'prefix' rows (one target, at each row's last real position)"
            )
        h = self.encode(seq, lengths)
        z = self.item_reps(target)
        aug, aug_lengths = self.seq_seq_view(seq, lengths)
        h_aug = self.encode(aug, aug_lengths)
        same = same_target_pairs(target)
        with full_precision(h.device):
            anchor = normalize(h)
            seq_item = nip_loss([anchor], normalize(z), same, cfg.tau, cfg.same_target)
            seq_seq = nip_loss([anchor], normalize(h_aug), same, cfg.tau, cfg.same_target)
            self.loss_parts = {"seq_item": seq_item.detach(), "seq_seq": seq_seq.detach()}
            return seq_item + cfg.lam * seq_seq

    def finetune_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.encoder(self.seq_input(batch["input"]))
        with full_precision(out.device):  # cosine / tau logits
            return next_item_ce(normalize(out) / self.config.tau, batch["target"], normalize(self.item_reps()), self.train_classes)
