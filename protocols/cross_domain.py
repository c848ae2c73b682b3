"""Cross-domain transfer: pre-train on one or more source datasets, then evaluate on a target.

The target is split leave-one-out; earlier model stages (pre-training) run on the union of the
sources' leave-one-out training data and are validated on the sources' validation cases.
`mode`:
  transductive  fine-tune on the target with item ID embeddings (the model's default),
  inductive     fine-tune on the target without ID embeddings (content only),
  zero_shot     no training on the target at all: the pre-trained model scores it by content.
Models without a pre-training stage train on the target alone; their records say so.
Source and target must share one feature space (same encoder and tagger).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from bench.data.dataset import Dataset
from bench.errors import BenchError
from protocols.base import PROTOCOLS, Protocol, Split, StagePlan
from protocols.leave_one_out import LeaveOneOut, LeaveOneOutConfig

if TYPE_CHECKING:
    from bench.nn.model import ModelConfig

MODES = ("transductive", "inductive", "zero_shot")


class CrossDomainConfig(LeaveOneOutConfig):
    source: list[str] = Field(default_factory=lambda: ["office"])
    target: str = "scientific"
    mode: str = Field("transductive", pattern="^(transductive|inductive|zero_shot)$")

    @field_validator("source", mode="before")
    @classmethod
    def comma_list(cls, v):
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v


@PROTOCOLS.register("cross_domain")
class CrossDomain(Protocol):
    name = "cross_domain"
    Config = CrossDomainConfig

    def __init__(self, config: CrossDomainConfig):
        super().__init__(config)
        if config.target in config.source:
            raise BenchError(f"protocol.target {config.target!r} is also a source: the transfer would not be cross-domain")

    def definition(self) -> dict[str, Any]:
        return {**super().definition(), "split": "leave_one_out on the target and on each source",
                "pretrain_on": "union of the sources' training sequences, validated on their validation cases"}

    @property
    def dataset(self) -> str:
        return self.config.target

    def stage_plan(self) -> StagePlan:
        """Earlier stages pre-train on the sources; zero_shot never trains on the target."""
        c = self.config
        return StagePlan(pretrain_on=tuple(c.source), final_stage_trains=c.mode != "zero_shot",
                         transfer_label=c.mode if c.source else "")  # no source: labels as they were

    def model_overrides(self, config_cls: type[ModelConfig]) -> dict[str, Any]:
        """No item-ID table unless transductive, in each config's own spelling."""
        return {} if self.config.mode == "transductive" else config_cls.without_ids()

    def split(self, ds: Dataset) -> Split:
        return self.loo().split(ds)

    def loo(self) -> LeaveOneOut:
        c = self.config
        return LeaveOneOut(LeaveOneOutConfig(max_len=c.max_len, max_users=c.max_users, min_len=c.min_len,
                                             candidates=c.candidates, candidates_seed=c.candidates_seed))
