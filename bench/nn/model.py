"""The model interface every recommender in the harness implements, and the model registry
(filled as model modules are imported: look models up through bench.plugins).

A model computes a training loss from a batch and scores users' histories against all items;
it never opens files, splits data or computes metrics.

Batches are dicts of tensors:
  input   [B, L] item ids, left-aligned, 0 = padding after the last real item
  target  [B, L] next item at each position, 0 where no loss is taken
  lengths [B]    number of real items in `input`
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn

from bench.errors import BenchError
from bench.features.inputs import FeatureInputs
from bench.registry import Registry

SIZE_FIELDS = ("hidden", "layers", "heads", "ffn", "mlp_hidden")  # checked >= 1 in every model config


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _check_sizes(self):
        """Widths and depths are positive and attention heads divide the width: one clear line
        at --set time instead of a traceback when the model is built."""
        for name in SIZE_FIELDS:
            value = getattr(self, name, None)
            if type(value) is int and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        hidden, heads = getattr(self, "hidden", None), getattr(self, "heads", None)
        if type(hidden) is int and type(heads) is int and hidden % heads:
            raise ValueError(f"heads ({heads}) must divide hidden ({hidden})")
        return self

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        """Optuna search space: {field: ("float"|"int"|"categorical", args...)}."""
        return {}

    @classmethod
    def without_ids(cls) -> dict[str, Any]:
        """Field values that drop the item-ID table (inductive / zero-shot transfer); {} = the
        model has none to drop."""
        return {}


@dataclass
class ModelContext:
    """What a model may know about the data: sizes, training item counts, item features."""

    n_items: int
    max_len: int
    train_item_counts: np.ndarray  # index 0 = padding
    features: Any = None  # the feature store's tensors, for content models
    extra: dict = field(default_factory=dict)
    # [n_items + 1] bool: the items that exist at training time, i.e. the training softmax's classes
    # (None: every item). Strict cold-item protocols leave the held-out items out: they are then
    # neither targets nor negatives, so their ID embeddings keep their initial values.
    train_classes: np.ndarray | None = None


class SeqRecModel(nn.Module):
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    label: ClassVar[str] = ""  # table name, e.g. "SASRec (CE)"
    trainable: ClassVar[bool] = True
    sample_mode: ClassVar[str] = "packed"  # default training sample layout, see bench.engine.batching
    # Multi-stage models (pre-train then fine-tune) list their stages; the runner builds one
    # instance per stage (each with the context of the stage's dataset), calls set_stage, and
    # carries every weight except `dataset_specific` ones from one stage to the next.
    stages: ClassVar[tuple[str, ...]] = ("train",)
    dataset_specific: ClassVar[tuple[str, ...]] = ()  # state_dict key prefixes not transferred
    trainer_defaults: ClassVar[dict[str, dict[str, Any]]] = {}  # per stage, e.g. {"pretrain": {"lr": 1e-3}}
    # per stage, the epochs and patience the model needs to converge; budgets never cut below it
    # (bench/engine/budgets.py). trainer_defaults must give at least this.
    training_need: ClassVar[dict[str, dict[str, int]]] = {}
    # whether the training loss restricts its classes to ctx.train_classes (next_item_ce does)
    honours_train_classes: ClassVar[bool] = True
    # whether a model whose config reads item features still builds without them (ctx.features None),
    # from a documented fallback it reports; otherwise a content model refuses such a context
    features_optional: ClassVar[bool] = False
    # Bumped whenever the model's numbers change for an unchanged config: it enters the run hash,
    # and tests/test_numerics_versions.py fails when outputs move without a bump.
    numerics_version: ClassVar[int] = 1

    def __init__(self, config: ModelConfig, ctx: ModelContext):
        super().__init__()
        self.config = config
        self.n_items = ctx.n_items
        self.max_len = ctx.max_len
        if ctx.train_classes is not None and not self.honours_train_classes:
            raise BenchError(
                f"{self.label or type(self).__name__}: the protocol keeps new items out of training, "
                "but this model's loss samples or scores every item; it cannot run this protocol"
            )
        classes = None if ctx.train_classes is None else torch.as_tensor(ctx.train_classes, dtype=torch.bool)
        self.register_buffer("train_classes", classes, persistent=False)

        self.stage = self.stages[-1]

    @classmethod
    def stages_for(cls, config: ModelConfig) -> tuple[str, ...]:
        """The stages this configuration runs (e.g. no pre-training in an ablation)."""
        return cls.stages

    @classmethod
    def training_need_for(cls, config: ModelConfig) -> dict[str, dict[str, int]]:
        """The training need of this configuration (a setting that learns slower may need more)."""
        return cls.training_need

    @classmethod
    def needs_features(cls, config: ModelConfig) -> dict | None:
        """Feature-store parameters this configuration reads (None: an ID-only model). Content
        models declare their inputs by mixing FeatureInputs into their config."""
        return config.feature_store_params() if isinstance(config, FeatureInputs) else None

    def set_stage(self, stage: str) -> None:
        if stage not in self.stages:
            raise ValueError(f"{type(self).__name__} has no stage {stage!r} (stages: {self.stages})")
        self.stage = stage

    def sample_mode_for(self, stage: str) -> str:
        return self.sample_mode

    def stage_spec(self, stage: str) -> dict[str, Any]:
        """The config fields that determine what `stage` learns (keys the stage's checkpoint)."""
        return self.config.model_dump()

    def transferable_state(self) -> dict[str, torch.Tensor]:
        return {
            k: v for k, v in self.state_dict().items() if not k.startswith(self.dataset_specific)
        }

    def load_transferable(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.startswith(self.dataset_specific)]
        if bad or unexpected:
            raise RuntimeError(f"stage transfer mismatch: missing {bad}, unexpected {unexpected}")

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def score(self, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, L] histories -> [B, n_items + 1] scores (column 0, the padding item, is ignored)."""
        raise NotImplementedError


class PretrainFinetune(SeqRecModel):
    """A model that pre-trains, then fine-tunes (`config.pretrain = False`: fine-tuning only).
    Pre-training reads 'prefix' rows (one sequence per row: in-batch negatives); fine-tuning
    reads 'packed' rows, the same (history, next item) pairs with ~4x fewer rows here. The
    pre-trained stage is keyed by every config field except the `finetune_only` ones, so
    fine-tuning variants share one stored pre-training."""

    stages = ("pretrain", "finetune")
    finetune_only: ClassVar[frozenset[str]] = frozenset({"pretrain"})

    @classmethod
    def stages_for(cls, config: ModelConfig) -> tuple[str, ...]:
        return cls.stages if config.pretrain else ("finetune",)

    def __init__(self, config: ModelConfig, ctx: ModelContext):
        super().__init__(config, ctx)
        self.stages = self.stages_for(config)  # instance attribute shadows the class-level tuple
        self.stage = self.stages[-1]

    def sample_mode_for(self, stage: str) -> str:
        return "prefix" if stage == "pretrain" else "packed"

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.pretrain_loss(batch) if self.stage == "pretrain" else self.finetune_loss(batch)

    def pretrain_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def finetune_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def stage_spec(self, stage: str) -> dict[str, Any]:
        spec = self.config.model_dump()
        if stage == "pretrain":
            return {k: v for k, v in spec.items() if k not in self.finetune_only}
        return spec


# Filled by the model modules as they are imported; bench.plugins imports them all (look models up there).
MODELS: Registry[type[SeqRecModel]] = Registry("model")


def full_precision(device: torch.device):
    """Cosines divided by tau = 0.07 are too coarse in bf16: contrastive losses and cosine scores
    run outside autocast."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def last_position(seq_out: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, L, H] outputs -> [B, H] at each row's last real position."""
    idx = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, seq_out.size(-1))
    return seq_out.gather(1, idx).squeeze(1)
