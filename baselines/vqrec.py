"""VQ-Rec (Hou et al., WWW 2023): item text -> discrete codes -> code embeddings -> SASRec-style
Transformer; contrastive pre-training with code-replacement hard negatives, then fine-tuning
that re-assigns code embeddings to the (new) codes of the target domain.

Codes (baselines/vq_codes.py): the item vector is ItemFeatures.mean of each configured modality,
concatenated for ("text", "image") (one quantiser over the 2d-dim vector, M codes per item).
OPQ + PQ (M = n_codes sub-spaces x K = 2**code_bits centroids) is fitted with faiss on the
stage's training items only (train_item_counts > 0); every item is then assigned its codes.
Codes are a non-transferred buffer, re-fitted for every stage from that stage's context: a new
target domain gets new codes and inherits the code embeddings, as in the reference.

Item representation = mean of its M code embeddings (one table of M*K + 1 rows, row 0 = the
padding code, zero, the padding item's every code). Sequence and item vectors are L2-normalised
and compared by cosine / tau everywhere (pre-training, fine-tuning CE, scoring).

Pre-training ('prefix' rows; the reference's pretrain()): InfoNCE of the sequence against its
next item, with in-batch next items as negatives (pairs sharing a next item masked out; the
reference sets their logit to 0 instead) plus `n_fake` semi-synthetic hard negatives per row:
the row's positive with each code replaced, with probability `fake_ratio` (rho, the reference's
fake_idx_ratio = 0.75), by a random *different* code of the same sub-space (the reference may
draw the same code), and at least one code replaced (a fake equal to the positive would be a
false negative). The reference adds one fake per row to that row's denominator (n_fake = 1). The paper's
"mixed-domain" negatives are the in-batch ones when pre-training on merged source datasets
(the cross_domain protocol's merged source).
The reference's pre-training has no sequence-sequence loss (that is UniSRec's); `seq_weight`
> 0 adds one (item-drop view, InfoNCE over in-batch views), off by default.

Fine-tuning (packed rows, CE over all items of cosine / tau) follows the reference trainer:
for the first `reassign_steps` optimiser steps only the code-to-embedding assignment trains
(code embeddings and Transformer held fixed); afterwards the assignment is fixed and the code
embeddings + input LayerNorm train, with the Transformer (positions + layers) frozen when
`freeze_encoder` (the reference freezes them in that phase in any case). The assignment is a
permutation per sub-space learnt through Sinkhorn: logits theta [M, K, K] (init perm_init *
identity: code c keeps embedding c, the exact pre-trained alignment when source and target
share the codes) -> `sinkhorn_iters` log-domain Sinkhorn iterations of theta / sinkhorn_tau ->
doubly stochastic P; the forward pass uses the hard map (row-wise argmax of P, like the
reference's differentiable top-1, so two codes may share an embedding), the backward pass P's
gradient (straight-through). Deviations from the reference code: no Gumbel noise (with a hard
forward it re-draws the assignment at random every step), and a working gradient (the
reference's torch.ceil on the top-1 matrix has zero gradient, so its trans_matrix never trains
and the assignment it keeps is a random draw). Steps are counted in a buffer (checkpointed).
What this assignment learning achieves (synthetic checks, lr 1e-3): with the codes of a trained
model permuted at random within each sub-space, the first phase lowers the loss (8.6 -> 6.0 in
300 steps) but recovers the planted permutation only slowly (25% of codes after 400 steps,
chance 6%); with unchanged codes the identity holds for ~250 steps, then single codes start to
flip (the straight-through gradient is a first-order guess about a discrete move). Hence the
identity init and the short first phase.
Without pre-training (pretrain = False) there is nothing to re-assign or freeze: the code
embeddings and the Transformer are trained from scratch.

Defaults: the reference's 2 layers, 2 heads, FFN 256, dropout 0.5, tau 0.07, M = 32, K = 256,
rho 0.75, 3 Sinkhorn iterations at temperature 0.7; hidden 64 for parity with the other
baselines (the paper: 300). The OPQ runs 20 iterations (faiss's default, used by the reference
index, is 50; the reconstruction error differs by ~3% and the fit takes 2.5x less time).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from baselines.seqops import last_target
from baselines.vq_codes import item_codes
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
from msm4sr.losses import same_target_pairs


class VQRecConfig(FeatureInputs, ModelConfig):
    hidden: int = Field(64, gt=0)  # the paper: 300
    layers: int = Field(2, gt=0)
    heads: int = Field(2, gt=0)
    ffn: int = Field(256, gt=0)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)  # hidden and attention dropout (reference 0.5)
    tau: float = Field(0.07, gt=0.0)
    modalities: tuple[Modality, ...] = ("text",)  # ("text", "image"): mean vectors concatenated
    # --- codes ---
    n_codes: int = Field(32, gt=0)  # M sub-spaces (codes per item)
    code_bits: int = Field(8, ge=1, le=16)  # K = 2**code_bits centroids per sub-space
    opq_iters: int = Field(20, ge=0)  # faiss OPQMatrix.niter (faiss default 50); 0 = plain PQ
    pq_iters: int = Field(25, gt=0)  # k-means iterations of the final PQ (faiss default)
    code_seed: int = 1234  # faiss k-means seed (its default)
    # --- pre-training ---
    pretrain: bool = True
    fake_ratio: float = Field(0.75, gt=0.0, le=1.0)  # rho, per-code replacement probability
    n_fake: int = Field(1, ge=0)  # semi-synthetic hard negatives per row
    seq_weight: float = Field(0.0, ge=0.0)  # sequence-sequence loss weight (not in VQ-Rec's code)
    item_drop: float = Field(0.2, ge=0.0, lt=1.0)  # its item-drop augmentation
    # --- fine-tuning ---
    freeze_encoder: bool = True
    reassign: bool = True  # False: fine-tune the code embeddings under the codes as they are
    reassign_steps: int = Field(200, ge=0)  # ~ the reference's 5 epochs at batch 256 on Amazon sets
    sinkhorn_iters: int = Field(3, ge=1)
    sinkhorn_tau: float = Field(0.7, gt=0.0)
    perm_init: float = Field(0.1, gt=0.0)  # identity margin of the assignment logits

    @classmethod
    def search_space(cls):
        return {"dropout": ("float", 0.1, 0.5), "fake_ratio": ("float", 0.25, 0.9)}


def normalize(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


def sinkhorn(logits: torch.Tensor, iters: int) -> torch.Tensor:
    """[.., K, K] logits -> doubly stochastic matrices (log-domain row/column normalisation)."""
    r = logits.float()
    for _ in range(iters):
        r = r - torch.logsumexp(r, dim=-1, keepdim=True)
        r = r - torch.logsumexp(r, dim=-2, keepdim=True)
    return r.exp()


def fake_codes(
    codes: torch.Tensor, n_fake: int, ratio: float, n_centroids: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """[B, M] code ids -> [B, n_fake, M] semi-synthetic items: each code replaced with prob
    `ratio` by a different code of its sub-space, at least one code per fake replaced. Returns a
    new tensor (the item code table and the batch are never written)."""
    b, m = codes.shape
    dev = codes.device
    base = torch.arange(m, device=dev) * n_centroids + 1
    local = (codes - base).unsqueeze(1).expand(b, n_fake, m)  # 0..K-1
    shape = (b, n_fake, m)
    replace = torch.rand(shape, device=dev, generator=generator) < ratio
    forced = F.one_hot(torch.randint(m, (b, n_fake), device=dev, generator=generator), m).bool()
    replace = replace | (forced & ~replace.any(-1, keepdim=True))
    shift = torch.randint(1, n_centroids, shape, device=dev, generator=generator)
    return torch.where(replace, (local + shift) % n_centroids, local) + base


@MODELS.register("vqrec")
class VQRec(PretrainFinetune):
    Config = VQRecConfig
    label = "VQ-Rec"
    # config fields that only act once pre-training is over: they never key the pre-trained stage
    finetune_only = frozenset(
        {
            "pretrain",
            "freeze_encoder",
            "reassign",
            "reassign_steps",
            "sinkhorn_iters",
            "sinkhorn_tau",
            "perm_init",
        }
    )
    # codes belong to the stage's dataset; the assignment and its step counter to the fine-tuning
    dataset_specific = ("item_codes", "perm_logits", "finetune_steps")
    trainer_defaults = {
        # the reference pre-trains 300 epochs at lr 1e-3 with batches of 8192 prefix rows
        "pretrain": {
            "lr": 1e-3,
            "batch_size": 1024,
            "epochs": 300,
            "patience": 20,
            "weight_decay": 0.0,
            "clip_grad_norm": 5.0,
            "valid_metric": "Recall@20",
        },
        # the reference fine-tunes at lr 1e-3, early stopping after 10 epochs without improvement
        "finetune": {
            "lr": 1e-3,
            "batch_size": 256,
            "epochs": 300,
            "patience": 10,
            "weight_decay": 0.0,
            "clip_grad_norm": 5.0,
            "valid_metric": "Recall@20",
        },
    }

    def __init__(self, config: VQRecConfig, ctx: ModelContext):
        super().__init__(config, ctx)
        feats = ctx.features
        if feats is None:
            raise BenchError(
                "vqrec needs item features (ctx.features is None): build the feature store first"
            )
        if feats.n_items != ctx.n_items:
            raise BenchError(f"item features cover {feats.n_items} items, the dataset has {ctx.n_items}")
        vectors = torch.cat([feats.mean(m).float() for m in config.modalities], dim=-1)
        codes = item_codes(
            vectors,
            ctx.train_item_counts,
            config.n_codes,
            config.code_bits,
            config.opq_iters,
            config.pq_iters,
            config.code_seed,
        )
        self.register_buffer("item_codes", codes)  # [n_items + 1, M], persistent: checkpoints hold it
        self.n_centroids = 2**config.code_bits
        m, k, h = config.n_codes, self.n_centroids, config.hidden
        self.code_emb = nn.Embedding(m * k + 1, h, padding_idx=0)
        self.encoder = SequenceTransformer(
            h, config.layers, config.heads, config.ffn, config.dropout, ctx.max_len
        )
        init_weights(self)
        with torch.no_grad():
            self.code_emb.weight[0].zero_()  # the padding code: the padding item's representation is 0
        self.perm_logits = nn.Parameter(config.perm_init * torch.eye(k).repeat(m, 1, 1))
        self.register_buffer("finetune_steps", torch.zeros((), dtype=torch.long))
        self.set_stage(self.stage)

    # ----- stages -----
    @property
    def pretrained(self) -> bool:
        return "pretrain" in self.stages

    @property
    def uses_assignment(self) -> bool:
        return self.stage == "finetune" and self.pretrained and self.config.reassign

    @property
    def reassigning(self) -> bool:
        """The first phase of fine-tuning: only the code-to-embedding assignment trains."""
        return self.uses_assignment and int(self.finetune_steps) < self.config.reassign_steps

    def set_stage(self, stage: str) -> None:
        super().set_stage(stage)
        fine = stage == "finetune"
        self.perm_logits.requires_grad_(self.uses_assignment)
        frozen = fine and self.pretrained and self.config.freeze_encoder
        # the reference freezes positions + layers and keeps training the input LayerNorm
        for part in (self.encoder.position, self.encoder.encoder):
            part.requires_grad_(not frozen)

    # ----- item side -----
    def code_table(self) -> torch.Tensor:
        """[M*K + 1, H] the embedding each code id uses: the table itself, or after fine-tuning's
        re-assignment (block k row c = embedding argmax_j P_k[c, j] of block k)."""
        w = self.code_emb.weight
        if not self.uses_assignment:
            return w
        m, k = self.config.n_codes, self.n_centroids
        learn = self.reassigning and torch.is_grad_enabled()
        if learn:
            w = w.detach()  # the embeddings are held fixed (no gradient at all) in this phase
        with full_precision(w.device):
            blocks = w[1:].float().view(m, k, -1)
            soft = sinkhorn(self.perm_logits / self.config.sinkhorn_tau, self.config.sinkhorn_iters)
            pick = soft.argmax(-1)  # [M, K]
            if learn:  # straight-through: the hard map forward, the Sinkhorn gradient backward
                hard = F.one_hot(pick, k).to(soft.dtype)
                new = torch.bmm(hard + soft - soft.detach(), blocks)
            else:
                new = blocks.gather(1, pick.unsqueeze(-1).expand(-1, -1, blocks.size(-1)))
            return torch.cat([w[:1].float(), new.reshape(m * k, -1)])

    def embed_codes(self, codes: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """[.., M] code ids -> [.., H] mean of their code embeddings (padding code excluded, so
        the padding item maps to 0)."""
        flat = codes.reshape(-1, codes.size(-1))
        with full_precision(table.device):
            out = F.embedding_bag(flat, table, mode="mean", padding_idx=0)
        return out.view(*codes.shape[:-1], -1)

    def item_table(self, table: torch.Tensor | None = None) -> torch.Tensor:
        """[n_items + 1, H] every item's representation (row 0 = padding = 0)."""
        return self.embed_codes(self.item_codes, self.code_table() if table is None else table)

    # ----- sequence side -----
    def run_encoder(self, x: torch.Tensor) -> torch.Tensor:
        if self.reassigning and torch.is_grad_enabled():  # the assignment alone trains
            fixed = {k: v.detach() for k, v in self.encoder.named_parameters()}
            return torch.func.functional_call(self.encoder, fixed, (x,))
        return self.encoder(x)

    def score(self, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        items = self.item_table()
        h = last_position(self.run_encoder(items[history]), lengths)
        with full_precision(h.device):
            return normalize(h) @ normalize(items).T

    # ----- losses -----
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = super().loss(batch)
        if self.training and self.stage == "finetune":
            self.finetune_steps += 1  # the re-assignment phase counts optimiser steps
        return out

    def pretrain_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.config
        seq, lengths = batch["input"], batch["lengths"]
        target = last_target(batch)
        if bool(((target <= 0) | ((batch["target"] > 0).sum(1) != 1)).any()):
            raise ValueError(
                "pre-training needs 'prefix' rows (one target, at each row's last real position)"
            )
        table = self.code_emb.weight
        h = last_position(self.run_encoder(self.embed_codes(self.item_codes[seq], table)), lengths)
        pos_codes = self.item_codes[target]
        same = same_target_pairs(target)
        with full_precision(h.device):
            hn = normalize(h)
            pos = normalize(self.embed_codes(pos_codes, table))
            logits = (hn @ pos.T / c.tau).masked_fill(same, float("-inf"))
            parts = [logits]
            if c.n_fake > 0:
                fakes = normalize(
                    self.embed_codes(fake_codes(pos_codes, c.n_fake, c.fake_ratio, self.n_centroids), table)
                )  # [B, n_fake, H]
                parts.append(torch.einsum("bh,bfh->bf", hn, fakes) / c.tau)
            loss = (torch.logsumexp(torch.cat(parts, 1), 1) - logits.diagonal()).mean()
        if c.seq_weight > 0:
            loss = loss + c.seq_weight * self.seq_seq_loss(seq, lengths, hn, same, table)
        return loss

    def seq_seq_loss(self, seq, lengths, hn, same, table) -> torch.Tensor:
        """InfoNCE between each sequence and its item-drop view, other rows' views as negatives."""
        ratio = torch.full(lengths.shape, self.config.item_drop, device=seq.device)
        aug, aug_len = sequence_dropout(seq, lengths, ratio)
        h_aug = last_position(self.run_encoder(self.embed_codes(self.item_codes[aug], table)), aug_len)
        with full_precision(h_aug.device):
            logits = (hn @ normalize(h_aug).T / self.config.tau).masked_fill(same, float("-inf"))
            return F.cross_entropy(logits, torch.arange(len(seq), device=seq.device))

    def finetune_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        items = self.item_table()
        out = self.run_encoder(items[batch["input"]])
        with full_precision(out.device):  # cosine / tau logits
            return next_item_ce(normalize(out) / self.config.tau, batch["target"], normalize(items), self.train_classes)
