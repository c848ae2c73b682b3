"""Item feature inputs shared by the content baselines (FDSA, SASRecM).

Per configured modality: the item's mean text / mean image-keyword vector (ItemFeatures.mean,
held as a non-persistent buffer, so features never enter a state_dict) through an MLP
d -> mlp_hidden -> hidden. The MLP follows the MSM4SR authors' SASRecM (RecBole MLPLayers
[768, 64, 64], dropout 0.2, ReLU): Dropout -> Linear -> ReLU -> Dropout -> Linear (-> ReLU, the
authors' final activation, `mlp_out_relu`). ReLU rather than GELU because that is what the
reported SASRecM / FDSA numbers were produced with.

Items without a modality (all slots masked: no image, or the padding item) get a zero output,
not MLP(0): MLP(0) is one learned constant vector, which would turn "missing" into a shared
pseudo-feature added to (SASRecM) or attended over with (FDSA) every such item. The authors'
data has both modalities for every item, so this only matters where ours does not.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from bench.errors import BenchError
from bench.features.inputs import FeatureInputs
from bench.nn.model import ModelContext
from bench.nn.transformer import TransformerConfig


class ContentConfig(FeatureInputs, TransformerConfig):
    """SASRec's Transformer fields (hidden 64, 2x2, FFN 256, dropout 0.2) plus the feature inputs."""

    mlp_hidden: int = Field(64, gt=0)
    mlp_dropout: float = Field(0.2, ge=0.0, lt=1.0)
    mlp_out_relu: bool = True  # the authors' ReLU after the MLP's last Linear

    @classmethod
    def search_space(cls):
        return {
            "dropout": ("float", 0.1, 0.5),
            "mlp_dropout": ("float", 0.0, 0.5),
            "hidden": ("categorical", [64, 128]),
        }



def feature_mlp(dim: int, mlp_hidden: int, hidden: int, dropout: float, out_relu: bool) -> nn.Sequential:
    layers = [nn.Dropout(dropout), nn.Linear(dim, mlp_hidden), nn.ReLU(), nn.Dropout(dropout),
              nn.Linear(mlp_hidden, hidden)]  # fmt: skip
    return nn.Sequential(*layers, nn.ReLU()) if out_relu else nn.Sequential(*layers)


class ItemFeatureMLPs(nn.Module):
    """Per modality m: feat_m [n_items + 1, d] and has_m [n_items + 1] buffers and mlp[m]."""

    def __init__(self, config: ContentConfig, ctx: ModelContext, model: str):
        super().__init__()
        feats = ctx.features
        if feats is None:
            raise BenchError(
                f"{model} needs item features (ctx.features is None): build the feature store first"
            )
        if feats.n_items != ctx.n_items:
            raise BenchError(f"item features cover {feats.n_items} items, the dataset has {ctx.n_items}")
        meta_n = (feats.meta or {}).get("n_keywords")
        if meta_n is not None and "image" in config.modalities and int(meta_n) != config.n_keywords:
            raise BenchError(
                f"features were built with N={meta_n} keywords, config asks n_keywords={config.n_keywords}"
            )
        self.modalities = tuple(config.modalities)
        for m in self.modalities:
            has = (feats.text_mask if m == "text" else feats.image_mask).any(1)
            if not bool(has[1:].any()):  # e.g. a store built with image_kind "none"
                raise BenchError(f"{model}: no item has {m} features; drop {m!r} from modalities")
            self.register_buffer(f"feat_{m}", feats.mean(m).float().contiguous(), persistent=False)
            self.register_buffer(f"has_{m}", has.bool().contiguous(), persistent=False)
        sizes = (feats.dim, config.mlp_hidden, config.hidden, config.mlp_dropout, config.mlp_out_relu)
        self.mlp = nn.ModuleDict({m: feature_mlp(*sizes) for m in self.modalities})

    def forward(self, m: str, ids: torch.Tensor | None = None) -> torch.Tensor:
        """MLP vectors of `ids` ([..] -> [.., hidden]; None = every item, [n_items + 1, hidden]).
        Indexing before the MLP gives each occurrence its own dropout, as the authors' input side."""
        x, has = getattr(self, f"feat_{m}"), getattr(self, f"has_{m}")
        if ids is not None:
            x, has = x[ids], has[ids]
        out = self.mlp[m](x)
        return out * has.unsqueeze(-1).to(out.dtype)

    def present(self, m: str, ids: torch.Tensor) -> torch.Tensor:
        return getattr(self, f"has_{m}")[ids]
