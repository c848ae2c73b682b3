"""MSM4SR / MP4SR: the M2SE encoder, NIP + CMCL pre-training, and ID-augmented fine-tuning."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from bench.nn.model import MODELS, ModelContext, PretrainFinetune, full_precision, last_position
from bench.nn.softmax_ce import class_table, masked_next_item_ce
from bench.nn.static import shape_static
from bench.nn.transformer import SequenceTransformer, init_weights
from msm4sr import fast
from msm4sr.augment import complementary_mixup, draw_ratios, mixup_mask, sequence_dropout
from msm4sr.config import MSM4SRConfig
from msm4sr.losses import cmcl_loss, nip_loss, normalize, same_target_pairs
from msm4sr.moe import MoEAdaptor
from msm4sr.pooling import AttentionPool

PREFIX_ROWS = "pre-training needs 'prefix' rows (one target, at each row's last real position)"


@MODELS.register("msm4sr")
class MSM4SR(PretrainFinetune):
    Config = MSM4SRConfig
    label = "MSM4SR"
    # 2: training draws its dropout masks in another order (fine-tuning encodes both modalities
    # after both adaptors), on CPU with msm4sr.fast: same distributions, another random stream
    numerics_version = 2
    # stages, row layouts and stage keys come from PretrainFinetune
    # fields that only matter once pre-training is over: they never key the pre-trained stage
    finetune_only = frozenset({"pretrain", "id_embeddings"})
    # The ID table; the feature tables are non-persistent buffers (never in a state_dict) and are
    # listed too so that a state saved by other means still transfers.
    dataset_specific = ("id_emb.", "feat_")
    # the authors' settings (RecBole overall.yaml + README run commands); batch = prefix rows
    trainer_defaults = {
        # random pre-training batches as in the code: NIP and CMCL take their negatives from the
        # batch, and length buckets would change them (trainer.pretrain.bucket_by_length=true is
        # ~5x less padding work on CPU, a different contrastive task)
        "pretrain": {"lr": 1e-3, "batch_size": 1024, "epochs": 300, "patience": 20, "weight_decay": 0.0,
                     "clip_grad_norm": 5.0, "valid_metric": "Recall@20"},
        "finetune": {"lr": 1e-4, "batch_size": 256, "epochs": 300, "patience": 20, "weight_decay": 1e-3,
                     "clip_grad_norm": 5.0, "valid_metric": "Recall@20"},
    }

    def __init__(self, config: MSM4SRConfig, ctx: ModelContext):
        super().__init__(config, ctx)
        self.modalities = tuple(config.modalities)
        feats = ctx.features
        if feats is None:
            raise BenchError("msm4sr needs item features (ctx.features is None): build the feature store first")
        if feats.n_items != ctx.n_items:
            raise BenchError(f"item features cover {feats.n_items} items, the dataset has {ctx.n_items}")
        meta_n = (feats.meta or {}).get("n_keywords")
        if meta_n is not None and "image" in self.modalities and int(meta_n) != config.n_keywords:
            raise BenchError(f"features were built with N={meta_n} keywords, config asks n_keywords={config.n_keywords}")
        dim = feats.dim
        for m in self.modalities:
            x, mask = (feats.text, feats.text_mask) if m == "text" else (feats.image, feats.image_mask)
            self.register_buffer(f"feat_{m}", x.float().contiguous(), persistent=False)
            self.register_buffer(f"feat_{m}_mask", mask.bool().contiguous(), persistent=False)

        self.pool = nn.ModuleDict(
            {m: AttentionPool(dim, config.pool_hidden, config.mask_padded_slots) for m in self.modalities}
        )
        self.adaptor = nn.ModuleDict(
            {m: MoEAdaptor(dim, config.hidden, config.n_experts, config.adaptor_dropout) for m in self.modalities}
        )
        self.encoder = SequenceTransformer(
            config.hidden, config.layers, config.heads, config.ffn, config.dropout, ctx.max_len
        )
        init_weights(self.encoder)
        self.proj_heads = (
            nn.ModuleDict({m: nn.Linear(config.hidden, config.hidden) for m in self.modalities})
            if config.proj
            else None
        )
        self.id_emb = None
        if config.id_embeddings:
            self.id_emb = nn.Embedding(ctx.n_items + 1, config.hidden, padding_idx=0)
            nn.init.normal_(self.id_emb.weight, 0.0, 0.02)
            with torch.no_grad():
                self.id_emb.weight[0].zero_()
        if not config.train_pooling:
            self.pool.requires_grad_(False)
        self._cache: dict | None = None
        self.loss_parts: dict[str, torch.Tensor] = {}  # detached components of the last loss

    # ----- stage interface -----
    def set_stage(self, stage: str) -> None:
        super().set_stage(stage)
        self._cache = None

    @property
    def uses_ids(self) -> bool:
        return self.stage == "finetune" and self.id_emb is not None

    # ----- item side -----
    def pooled(self, m: str, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Attention-pooled item vectors [.., d] of `ids` (None = every item, row 0 = padding)."""
        x, mask = getattr(self, f"feat_{m}"), getattr(self, f"feat_{m}_mask")
        if ids is not None:
            x, mask = x[ids], mask[ids]
        return self.pool[m](x, mask)

    def _item_tables(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per modality: the item table [n_items + 1, H] (adaptor output, + ID embedding when
        fine-tuning) and its L2-normalised float copy. With dropout off the same table is both
        the sequence input and the candidate embedding."""
        tables = {}
        for m in self.modalities:
            z = self.adaptor[m](self.pooled(m))
            if self.uses_ids:
                z = z + self.id_emb.weight
            with full_precision(z.device):
                tables[m] = (z, normalize(z))
        return tables

    def prepare_scoring(self) -> None:
        """Compute and cache the item tables (eval mode); cleared by train(), set_stage, to()."""
        with torch.no_grad():
            self._cache = {"tables": self._item_tables(), "key": self._cache_key()}

    def clear_scoring_cache(self) -> None:
        self._cache = None

    def _cache_key(self):
        return (self.stage, self.id_emb.weight.device if self.id_emb is not None else self.encoder.norm.weight.device)

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self._cache = None
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        self._cache = None
        return super().load_state_dict(*args, **kwargs)

    # ----- sequence side -----
    def encode(self, z_seq: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        out = self.encoder(z_seq)
        return out if lengths is None else last_position(out, lengths)

    def encode_train(
        self, z: dict[str, torch.Tensor], lengths: torch.Tensor, last_only: bool
    ) -> dict[str, torch.Tensor]:
        """Per modality: the encoder at each row's last position ([B, H], last_only) or at every
        position ([B, L, H], read at real positions only). On CPU the modalities go through the
        encoder as one batch, in length groups (msm4sr.fast): the same function, less padding."""
        mods = list(z)
        if not fast.supported(self.encoder, z[mods[0]]):
            return {m: self.encode(z[m], lengths if last_only else None) for m in mods}
        out = fast.encode_grouped(self.encoder, torch.cat([z[m] for m in mods]), lengths.repeat(len(mods)), last_only)
        return dict(zip(mods, out.chunk(len(mods))))

    def score(self, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Sum over modalities of cos(h^m, z^m_i (+ id_i)) for every item: [B, n_items + 1]."""
        cacheable = not self.training and not torch.is_grad_enabled()
        if cacheable and self._cache is not None and self._cache["key"] == self._cache_key():
            tables = self._cache["tables"]
        else:
            tables = self._item_tables()
            if cacheable:
                self._cache = {"tables": tables, "key": self._cache_key()}
        total = None
        for m in self.modalities:
            z, cand = tables[m]
            h = self.encode(z[history], lengths)
            with full_precision(h.device):
                s = normalize(h) @ cand.T
            total = s if total is None else total + s
        return total

    # ----- losses -----
    def pretrain_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        cfg = self.config
        seq, lengths = batch["input"], batch["lengths"]
        target = batch["target"].gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
        prefix_rows = (target > 0) & ((batch["target"] > 0).sum(1) == 1)
        static = shape_static(seq)
        if static:  # checked on the device, no host read (a failure stops the run there)
            torch._assert_async(prefix_rows.all(), PREFIX_ROWS)
        elif not bool(prefix_rows.all()):
            raise ValueError(PREFIX_ROWS)
        b, length = seq.shape
        per_seq = cfg.ratio_scope == "sequence"
        if cfg.item_dropout and self.training:
            seq, lengths = sequence_dropout(seq, lengths, draw_ratios(b, cfg.item_dropout_max, per_seq, seq),
                                            keep_end=cfg.seq_dropout_keep)
        real = seq > 0
        z_seq, z_tgt = {}, {}
        if static:  # every item projected once, every position gathered: no data-dependent shape
            ids = torch.cat([seq.reshape(-1), target])
            for m in self.modalities:
                y, g = self.adaptor[m].project(self.pooled(m))
                z = self.adaptor[m].combine(y[ids], g[ids])
                z_seq[m] = torch.where(real.unsqueeze(-1), z[: seq.numel()].view(b, length, -1), 0.0)
                z_tgt[m] = z[seq.numel():]
        else:
            # pool and project each distinct item of the batch once; dropout/LayerNorm/gating per
            # occurrence, so every position and every target gets its own dropout mask as in the code
            # ... and only at real positions: padding comes after the last real item, so with causal
            # attention its value never reaches a real position (zeros there save ~L/len of the work)
            n_real = int(real.sum())
            uniq, inv = torch.unique(torch.cat([seq[real], target]), return_inverse=True)
            inv_seq, inv_tgt = inv[:n_real], inv[n_real:]
            for m in self.modalities:
                y, g = self.adaptor[m].project(self.pooled(m, uniq))
                z_seq[m] = scatter_rows(real, self.adaptor[m].combine(y[inv_seq], g[inv_seq]))
                z_tgt[m] = self.adaptor[m].combine(y[inv_tgt], g[inv_tgt])
        if cfg.mixup and len(self.modalities) == 2 and self.training:
            mask = mixup_mask(lengths, length, draw_ratios(b, cfg.mixup_max, per_seq, seq))
            z_seq["text"], z_seq["image"] = complementary_mixup(z_seq["text"], z_seq["image"], mask)
        h = self.encode_train(z_seq, lengths, last_only=True)
        return self.pretrain_objective(h, z_tgt, target)

    def pretrain_objective(
        self, h: dict[str, torch.Tensor], z_tgt: dict[str, torch.Tensor], target: torch.Tensor
    ) -> torch.Tensor:
        """w_nip * sum_m NIP_m + lambda * CMCL, in the proj=False or proj=True form."""
        cfg = self.config
        same = same_target_pairs(target)
        mods = self.modalities
        device = target.device
        with full_precision(device):
            items = {m: normalize(z_tgt[m]) for m in mods}
            nip = torch.zeros((), device=device)
            cmcl = torch.zeros((), device=device)
            parts = {}
            if self.proj_heads is None:
                views = {m: normalize(h[m]) for m in mods}
                for m in mods:
                    parts[f"nip_{m}"] = nip_loss([views[m]], items[m], same, cfg.tau, cfg.same_target)
                    nip = nip + parts[f"nip_{m}"]
                if len(mods) == 2:
                    cmcl = cmcl_loss(views["text"], views["image"], same, cfg.tau, cfg.same_target, cfg.cmcl_form)
            else:  # each modality space s gets a two-view NIP and its own CMCL
                for s in mods:
                    head = self.proj_heads[s]
                    views = [normalize(head(h[m].float())) for m in mods]
                    parts[f"nip_{s}"] = nip_loss(views, items[s], same, cfg.tau, cfg.same_target)
                    nip = nip + parts[f"nip_{s}"]
                    if len(mods) == 2:
                        cmcl = cmcl + cmcl_loss(views[0], views[1], same, cfg.tau, cfg.same_target, cfg.cmcl_form)
            parts["cmcl"] = cmcl
            self.loss_parts = {k: v.detach() for k, v in parts.items()}
            return cfg.nip_weight * nip + cfg.cmcl_weight * cmcl

    def finetune_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """CE over all items of sum_m cos(h^m, z^m_i + id_i) / tau at every position with a target."""
        seq, target = batch["input"], batch["target"]
        keep = target > 0
        real = seq > 0  # own dropout per real position, as the code; padding stays zero
        static = shape_static(seq)
        cands, z_in = {}, {}
        for m in self.modalities:
            y, g = self.adaptor[m].project(self.pooled(m))
            cands[m] = self.adaptor[m].combine(y, g)
            if static:  # every position, padding zeroed after: no data-dependent shape
                z_in[m] = torch.where(real.unsqueeze(-1), self.adaptor[m].combine(y[seq], g[seq]), 0.0)
            else:
                z_in[m] = scatter_rows(real, self.adaptor[m].combine(y[seq[real]], g[seq[real]]))
            if self.uses_ids:
                cands[m] = cands[m] + self.id_emb.weight
                z_in[m] = z_in[m] + self.id_emb(seq)
        outs = self.encode_train(z_in, real.sum(1), last_only=False)
        if static:
            return self._static_finetune_ce(outs, cands, target)
        logits = None
        for m in self.modalities:
            out = outs[m][keep]
            table, tgt = class_table(cands[m], target[keep], self.train_classes)  # never the padding item
            with full_precision(out.device):
                s = normalize(out) @ normalize(table).T
            logits = s if logits is None else logits + s
        with full_precision(logits.device):
            return F.cross_entropy(logits / self.config.tau, tgt)

    def _static_finetune_ce(self, outs: dict, cands: dict, target: torch.Tensor) -> torch.Tensor:
        """finetune_loss's CE at every position: no-target positions weigh 0, non-class items
        (and the padding item) are left out of the softmax as -inf logits."""
        with full_precision(target.device):
            logits = sum(normalize(outs[m].reshape(target.numel(), -1)) @ normalize(cands[m][1:]).T
                         for m in self.modalities)
            return masked_next_item_ce(logits / self.config.tau, target, self.train_classes)


def scatter_rows(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """[B, L] bool mask and [mask.sum(), H] values -> [B, L, H], zeros where mask is False."""
    out = values.new_zeros(*mask.shape, values.shape[-1])
    out[mask] = values
    return out
