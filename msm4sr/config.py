"""MSM4SR configuration: every switch of MSM4SR.md section 6 with the paper's default."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from bench.features.inputs import FeatureInputs
from bench.nn.model import ModelConfig


class MSM4SRConfig(FeatureInputs, ModelConfig):
    # --- backbone (MSM4SR.md section 2) ---
    hidden: int = Field(64, gt=0)  # d0: adaptor output = Transformer width
    layers: int = Field(2, gt=0)
    heads: int = Field(2, gt=0)
    ffn: int = Field(256, gt=0)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)  # Transformer hidden + attention dropout
    pool_hidden: int = Field(64, gt=0)  # attention pooling W1: d -> 64
    n_experts: int = Field(8, gt=0)
    adaptor_dropout: float = Field(0.2, ge=0.0, lt=1.0)
    mask_padded_slots: bool = True  # False = the released code's quirk (padded slots get weight)
    train_pooling: bool = True  # False = the released code's quirk (pooling gets no gradient)

    # inputs (modalities, n_keywords, feature_params) come from FeatureInputs: part of the config,
    # so that they key the pre-trained checkpoint too; w/o image = modalities ("text",)

    # --- pre-training (section 3) ---
    pretrain: bool = True  # False = fine-tune from scratch (stages = ("finetune",))
    mixup: bool = True  # complementary sequence mixup
    mixup_max: float = Field(0.5, ge=0.0, le=1.0)  # mixup ratio p ~ U(0, mixup_max)
    item_dropout: bool = True  # sequence random dropout
    item_dropout_max: float = Field(0.2, ge=0.0, lt=1.0)  # drop ratio ~ U(0, item_dropout_max)
    # which end of a sequence always survives the dropout: "last" is what the released code does
    # (MSM4SR.md section 2), "first" what it intends
    seq_dropout_keep: Literal["last", "first"] = "last"
    ratio_scope: Literal["batch", "sequence"] = "batch"  # ratios drawn per batch (code) or per sequence (paper)
    nip_weight: float = Field(1.0, ge=0.0)  # w_nip; 0 = w/o NIP
    cmcl_weight: float = Field(0.01, ge=0.0)  # lambda; 0 = w/o CMCL
    proj: bool = False  # True = the paper figure's projection heads W_t, W_v
    tau: float = Field(0.07, gt=0.0)  # temperature of every contrastive loss and of fine-tuning logits
    same_target: Literal["mask", "logit0"] = "mask"  # in-batch rows sharing a target: masked or logit 0
    cmcl_form: Literal["ntxent", "code"] = "ntxent"  # "code": the released code's 2nd direction

    # --- fine-tuning (section 4) ---
    id_embeddings: bool = True  # False = the inductive variant

    # A named set of overrides across groups (this config, the trainer, the data), expanded by
    # build_spec before the user's own --set values; kept here so the record names it.
    preset: Literal["none", "authors_code"] = "none"
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # every quirk of the released code (lzz0007/MP4SR) at once, to compare with it
        "authors_code": {
            "mask_padded_slots": False, "train_pooling": False, "same_target": "logit0", "cmcl_form": "code",
            "ratio_scope": "batch", "seq_dropout_keep": "last",
            "trainer.pretrain.bucket_by_length": False, "data.dedup": "keep_last",
        },
    }

    @classmethod
    def search_space(cls):
        # the authors' tuning grid (MSM4SR.md section 4), lr made continuous over its range so that
        # trials do not repeat grid points: fine-tuning only, so every trial of a seed fine-tunes
        # the one pre-training the store holds for it
        return {
            "trainer.finetune.batch_size": ("categorical", [256, 512, 1024]),
            "trainer.finetune.lr": ("loguniform", 1e-4, 1e-3),
            "trainer.finetune.weight_decay": ("categorical", [0.0, 1e-4, 1e-3]),
        }

    @classmethod
    def without_ids(cls) -> dict:
        return {"id_embeddings": False}
