"""S3-Rec (Zhou et al. 2020): self-supervised pre-training with four pretext tasks, then
SASRec-style fine-tuning (CE over all items, causal encoder).

Pre-training (stage "pretrain", bidirectional encoder with a padding mask, 'prefix' rows: each
training prefix plus its next item is one sequence, like the reference's part-sequences):
- AAP: every unmasked item's output vs all attributes (bilinear, BCE on the item's attributes);
- MIP: masked items (prob `mask_ratio`, and always the last item) vs the true item and one
  sampled negative;
- MAP: masked items' outputs vs all attributes (BCE on the masked item's attributes);
- SP: a random segment is masked; the context is compared with the segment and with an equally
  long segment of other sequences in the batch (the reference uses the whole training stream).
Scoring follows the reference code: bilinear W x . y, BCE; MIP and SP take sigmoid(sigmoid(pos)
- sigmoid(neg)) as in the public implementation. Losses are summed as in the reference and divided
by the batch size. MIP negatives are uniform over items except the true one (the reference
excludes the user's whole item set).

Attributes (`attributes`, see item_attributes; the source used is kept in `attribute_source`):
- "text" (default): the feature store's item text vectors (image_kind "none", so no tagger is
  needed) are clustered by deterministic spherical k-means (seed 0, `kmeans_iters` iterations)
  of each item's mean text vector into `n_attributes` clusters; an item's attribute is its
  cluster. The scientific text holds title, category path and brand, so the clusters stand in
  for the reference's category/brand attributes;
- "text_image": as "text", plus a second attribute per item from clustering its mean
  image-keyword vector (items without images get none) - the multimodal setting;
- "popularity": no features; `popularity_buckets` equal-size buckets of training popularity.
  These carry far less than categories; results in that setting must say so.
If ctx.features is None although the setting asks for features (a model built by hand), the
attributes come from ctx.extra["item_attributes"] when given ([n_items + 1, K] ids, 0 = none,
e.g. category ids), else from popularity buckets.

`pretrain = False` runs the fine-tuning stage alone (the no-pre-training ablation = SASRec CE).
The pre-training stage trains for a fixed 100 epochs by default (the reference fine-tunes from
its 100th pre-training epoch), selecting by the masked-item scores of `score` in that stage.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from baselines.sasrec import SASRecConfig
from baselines.seqops import MaskTokenSASRec, append_item, full_sequence, real_mask, sample_negatives
from bench.nn.model import MODELS, ModelContext, last_position
from bench.nn.transformer import init_weights


class S3RecConfig(SASRecConfig):
    mask_ratio: float = Field(0.2, gt=0.0, lt=1.0)
    aap_weight: float = Field(0.2, ge=0.0)
    mip_weight: float = Field(1.0, ge=0.0)
    map_weight: float = Field(1.0, ge=0.0)
    sp_weight: float = Field(0.5, ge=0.0)
    n_attributes: int = Field(64, ge=2)  # k-means clusters per modality (feature attributes)
    kmeans_iters: int = Field(25, ge=1)
    popularity_buckets: int = Field(10, ge=1)  # fallback attributes without features
    attributes: Literal["text", "text_image", "popularity"] = "text"
    feature_params: dict[str, Any] = Field(default_factory=dict)  # extra feature-store parameters
    pretrain: bool = True

    @classmethod
    def search_space(cls):
        return {
            **SASRecConfig.search_space(),
            "mask_ratio": ("float", 0.1, 0.5),
            "n_attributes": ("categorical", [32, 64, 128]),
        }


def spherical_kmeans(x: torch.Tensor, k: int, iters: int, seed: int = 0) -> torch.Tensor:
    """Cluster ids (0..k-1) of the rows of x by cosine similarity; deterministic for a seed."""
    x = F.normalize(x.double(), dim=-1)
    k = min(k, len(x))
    g = torch.Generator().manual_seed(seed)
    centroids = x[torch.randperm(len(x), generator=g)[:k]].clone()
    for _ in range(iters):
        assign = (x @ centroids.T).argmax(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        filled = torch.bincount(assign, minlength=k) > 0
        centroids = torch.where(filled.unsqueeze(1), F.normalize(sums, dim=-1), centroids)
    return (x @ centroids.T).argmax(1)


def item_attributes(ctx: ModelContext, config: S3RecConfig) -> torch.Tensor:
    """[n_items + 1, K] attribute ids per item (1-based, 0 = none; row 0 = padding item)."""
    n = ctx.n_items
    features = ctx.features if config.attributes != "popularity" else None
    if features is not None:
        cols = []
        modalities = ("text", "image") if config.attributes == "text_image" else ("text",)
        for slot, modality in enumerate(modalities):
            mask = features.text_mask if modality == "text" else features.image_mask
            has = mask[1 : n + 1].any(1)
            col = torch.zeros(n + 1, dtype=torch.long)
            if has.sum() >= 2:
                vecs = features.mean(modality)[1 : n + 1][has].float()
                ids = spherical_kmeans(vecs, config.n_attributes, config.kmeans_iters)
                col[1:][has] = ids + 1 + slot * config.n_attributes
            cols.append(col)
        return torch.stack(cols, 1)
    given = ctx.extra.get("item_attributes") if config.attributes != "popularity" else None
    if given is not None:
        return torch.as_tensor(np.asarray(given), dtype=torch.long).reshape(n + 1, -1)
    counts = torch.as_tensor(np.asarray(ctx.train_item_counts[1 : n + 1]), dtype=torch.float64)
    order = torch.sort(counts, stable=True).indices  # least popular first
    bucket = torch.empty(n, dtype=torch.long)
    bucket[order] = torch.arange(n) * config.popularity_buckets // n + 1
    return torch.cat([torch.zeros(1, dtype=torch.long), bucket]).unsqueeze(1)


@MODELS.register("s3rec")
class S3Rec(MaskTokenSASRec):
    Config = S3RecConfig
    label = "S3-Rec"
    honours_train_classes = False  # pre-training samples negative items from every item
    features_optional = True  # attributes then come from ctx.extra or popularity (see attribute_source)
    stages = ("pretrain", "finetune")
    PRETRAIN_FIELDS = (
        "hidden", "layers", "heads", "ffn", "dropout", "mask_ratio", "aap_weight", "mip_weight",
        "map_weight", "sp_weight", "n_attributes", "kmeans_iters", "popularity_buckets", "attributes",
        "feature_params",
    )  # fmt: skip
    trainer_defaults = {"pretrain": {"epochs": 100, "patience": 100}}
    # the reference pre-trains a fixed 100 epochs (bench/engine/budgets.py: a budget cutting it is recorded)
    training_need = {"pretrain": {"epochs": 100, "patience": 100}}

    @classmethod
    def stages_for(cls, config: S3RecConfig) -> tuple[str, ...]:
        return cls.stages if config.pretrain else ("finetune",)

    @classmethod
    def needs_features(cls, config: S3RecConfig) -> dict | None:
        if config.attributes == "popularity":
            return None
        if config.attributes == "text":
            return {"image_kind": "none", "tagger": None, **config.feature_params}
        return dict(config.feature_params)

    def __init__(self, config: S3RecConfig, ctx: ModelContext):
        super().__init__(config, ctx)
        self.stages = self.stages_for(config)  # instance attribute shadows the class-level tuple
        self.stage = self.stages[-1]
        attrs = item_attributes(ctx, config)
        self.n_attributes = int(attrs.max())
        hot = torch.zeros(ctx.n_items + 1, self.n_attributes + 1)
        hot.scatter_(1, attrs, 1.0)
        self.register_buffer("attr_hot", hot[:, 1:].contiguous(), persistent=False)  # [n+1, A]
        self.attribute_source = (
            "popularity" if config.attributes == "popularity"
            else config.attributes if ctx.features is not None
            else "given" if ctx.extra.get("item_attributes") is not None
            else "popularity"
        )  # fmt: skip
        h = config.hidden
        self.attr_emb = nn.Embedding(self.n_attributes + 1, h, padding_idx=0)
        self.aap = nn.Linear(h, h)
        self.mip = nn.Linear(h, h)
        self.map = nn.Linear(h, h)
        self.sp = nn.Linear(h, h)
        for m in (self.attr_emb, self.aap, self.mip, self.map, self.sp):
            init_weights(m)
        self.set_stage(self.stage)

    def set_stage(self, stage: str) -> None:
        super().set_stage(stage)
        self.encoder.causal = stage != "pretrain"  # bidirectional pre-training, causal fine-tuning

    def sample_mode_for(self, stage: str) -> str:
        return "prefix" if stage == "pretrain" else "packed"

    def stage_spec(self, stage: str) -> dict:
        spec = self.config.model_dump()
        return {k: spec[k] for k in self.PRETRAIN_FIELDS} if stage == "pretrain" else spec

    def loss(self, batch):
        if self.stage == "pretrain":
            return self.pretrain_loss(batch)
        return super().loss(batch)

    def pretrain_loss(self, batch) -> torch.Tensor:
        c = self.config
        seq, lengths = full_sequence(batch, self.max_len)
        b, length = seq.shape
        real = real_mask(seq, lengths)
        cols = torch.arange(length, device=seq.device).unsqueeze(0)
        is_last = cols == (lengths - 1).unsqueeze(1)
        chosen = ((torch.rand(seq.shape, device=seq.device) < c.mask_ratio) | is_last) & real
        out = self.encode(torch.where(chosen, self.mask_id, seq))
        attr = self.attr_emb.weight[1:]
        attr_target = self.attr_hot[seq]

        aap = F.binary_cross_entropy_with_logits(
            (self.aap(out) @ attr.T).float(), attr_target, reduction="none"
        ).sum(-1)
        aap = (aap * (real & ~chosen)).sum()
        map_ = F.binary_cross_entropy_with_logits(
            (self.map(out) @ attr.T).float(), attr_target, reduction="none"
        ).sum(-1)
        map_ = (map_ * chosen).sum()

        h, pos = self.mip(out[chosen]), seq[chosen]
        neg = sample_negatives(pos, self.n_items)
        pos_s = torch.sigmoid((h * self.item_emb(pos)).sum(-1).float())
        neg_s = torch.sigmoid((h * self.item_emb(neg)).sum(-1).float())
        mip = F.softplus(-(pos_s - neg_s)).sum()  # BCE(sigmoid(pos - neg), 1)

        sp = self.segment_loss(seq, lengths, real)
        total = c.aap_weight * aap + c.mip_weight * mip + c.map_weight * map_ + c.sp_weight * sp
        return total / b

    def segment_parts(self, seq, lengths, real):
        """(masked-segment sequence, positive segment, negative segment), each [B, L]: the segment
        is 1..n//2 consecutive items; outside it the segment sequences hold [MASK]."""
        length = seq.size(1)
        cols = torch.arange(length, device=seq.device).unsqueeze(0)
        size = 1 + (torch.rand(lengths.shape, device=seq.device) * (lengths // 2)).long()
        start = (torch.rand(lengths.shape, device=seq.device) * (lengths - size + 1)).long()
        inside = (cols >= start.unsqueeze(1)) & (cols < (start + size).unsqueeze(1)) & real
        masked = torch.where(inside, self.mask_id, seq)
        outside = torch.where(real, self.mask_id, 0)
        pos = torch.where(inside, seq, outside)
        stream = seq[real]  # the batch's items, concatenated (the reference's long sequence)
        n_start = (torch.rand(lengths.shape, device=seq.device) * (len(stream) - size + 1)).long()
        idx = (n_start.unsqueeze(1) + cols - start.unsqueeze(1)).clamp(0, len(stream) - 1)
        neg = torch.where(inside, stream[idx], outside)
        return masked, pos, neg

    def segment_loss(self, seq, lengths, real):
        masked, pos, neg = self.segment_parts(seq, lengths, real)
        context = self.sp(last_position(self.encode(masked), lengths))
        pos_h = last_position(self.encode(pos), lengths)
        neg_h = last_position(self.encode(neg), lengths)
        pos_s = torch.sigmoid((context * pos_h).sum(-1).float())
        neg_s = torch.sigmoid((context * neg_h).sum(-1).float())
        keep = lengths >= 2  # shorter rows have no segment (the reference's loss is constant there)
        return (F.softplus(-(pos_s - neg_s)) * keep).sum()

    def score(self, history, lengths):
        if self.stage == "pretrain":  # masked item prediction at an appended [MASK]
            seq, n = append_item(history, lengths, self.mask_id, self.max_len)
            return self.mip(last_position(self.encode(seq), n)) @ self.item_emb.weight.T
        return super().score(history, lengths)
