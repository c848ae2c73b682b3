"""The protocol interface and the Split it produces.

A Split holds training sequences (CSR), validation and test evaluation cases (the main test set
and any extra ones) and the protocol's written definition. The test cases are locked until the
caller unlocks them, so tuning and model selection code cannot read test targets by accident.
A protocol's StagePlan says what the stages of a run train on; the runner asks the protocol and
the split, and never looks for a protocol's own attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bench.data.dataset import Dataset
from bench.errors import BenchError
from bench.registry import Registry

if TYPE_CHECKING:
    from bench.nn.model import ModelConfig


@dataclass
class TrainSequences:
    """Per-user training sequences (items in time order), CSR."""

    offsets: np.ndarray
    items: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def item_counts(self, n_items: int) -> np.ndarray:
        """Training frequency of each item id (index 0 = padding, always 0)."""
        return np.bincount(self.items, minlength=n_items + 1)


@dataclass
class EvalCases:
    """One evaluation case per row: a user, their full history before the target, the target."""

    users: np.ndarray
    targets: np.ndarray
    hist_offsets: np.ndarray  # CSR over hist_items, len n_cases + 1
    hist_items: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def padded_histories(self, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Last `max_len` history items, left-aligned and zero-padded; and their lengths."""
        ends = self.hist_offsets[1:]
        lengths = np.minimum(np.diff(self.hist_offsets), max_len)
        cols = np.arange(max_len)
        idx = (ends - lengths)[:, None] + cols[None, :]
        valid = cols[None, :] < lengths[:, None]
        out = np.where(valid, self.hist_items[np.minimum(idx, len(self.hist_items) - 1)], 0)
        return out.astype(np.int64), lengths.astype(np.int64)

    def subset(self, rows: np.ndarray) -> EvalCases:
        starts, ends = self.hist_offsets[rows], self.hist_offsets[rows + 1]
        lengths = ends - starts
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        take = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return EvalCases(self.users[rows], self.targets[rows], offsets, self.hist_items[take])


MAIN_TEST = "test"  # the name of a split's main test set among its test_sets()


@dataclass
class Split:
    n_items: int
    train: TrainSequences
    valid: EvalCases
    _test: EvalCases
    definition: dict[str, Any]
    test_unlocked: bool = field(default=False)
    train_classes: np.ndarray | None = None  # see ModelContext.train_classes (None: every item)
    # test sets scored beside the main one, by name (e.g. the unrestricted test of a restricted one)
    _extra_test: dict[str, EvalCases] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if MAIN_TEST in self._extra_test:
            raise BenchError(f"an extra test set may not be named {MAIN_TEST!r}: that is the main test set")

    @property
    def test(self) -> EvalCases:
        self._check_unlocked()
        return self._test

    def test_sets(self) -> dict[str, EvalCases]:
        """Every test set the split is judged on: the main one first (MAIN_TEST), then the extras."""
        self._check_unlocked()
        return {MAIN_TEST: self._test, **self._extra_test}

    def unlock_test(self) -> EvalCases:
        self.test_unlocked = True
        return self._test

    def _check_unlocked(self) -> None:
        if not self.test_unlocked:
            raise BenchError(
                "test split is locked: only the final evaluation of a selected configuration may read it "
                "(call split.unlock_test() there, never in training or tuning code)"
            )


@dataclass(frozen=True)
class StagePlan:
    """What the stages of a run train on, as the protocol declares it.

    Earlier stages (pre-training) train on the protocol's split of `pretrain_on` (merged), or on
    the target split when it is empty. The final stage trains on the target split unless
    `final_stage_trains` is False, in which case a model that ran an earlier stage only scores
    the target (zero-shot); a single-stage model always trains on the target."""

    pretrain_on: tuple[str, ...] = ()
    final_stage_trains: bool = True
    # what a record's label adds for a model with earlier stages (e.g. the transfer mode); when set,
    # a single-stage model's label says it trained on the target only ('' = labels unchanged)
    transfer_label: str = ""

    def label_suffix(self, n_stages: int) -> str:
        if not self.transfer_label:
            return ""
        return f" [{self.transfer_label}]" if n_stages > 1 else " [target only]"


class ProtocolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_len: int = Field(50, gt=0)
    max_users: int | None = Field(None, gt=0)  # keep only the first N users (quick runs and tests)
    candidates: str | None = Field(None, pattern=r"^(uni|pop)[1-9][0-9]*$")  # sampled mode: uni100, pop100
    candidates_seed: int = Field(0, ge=0)  # the candidate sets' own seed (never the model seed)


class Protocol:
    name: ClassVar[str]
    Config: ClassVar[type[ProtocolConfig]] = ProtocolConfig
    split_note: ClassVar[bool] = True  # reports list what the split holds (its counts per dataset)

    def __init__(self, config: ProtocolConfig):
        self.config = config

    def definition(self) -> dict[str, Any]:
        return {"protocol": self.name, **self.config.model_dump()}

    @property
    def dataset(self) -> str | None:
        """The dataset this protocol evaluates on, if the protocol names it itself."""
        return None

    def model_overrides(self, config_cls: type[ModelConfig]) -> dict[str, Any]:
        """Model config values the protocol implies for this model's config class."""
        return {}

    def split(self, ds: Dataset) -> Split:
        raise NotImplementedError

    def stage_plan(self) -> StagePlan:
        """The default: every stage trains on the target split."""
        return StagePlan()

    def pretrain_split(self, ds: Dataset) -> Split:
        """How a pre-training dataset (StagePlan.pretrain_on, merged) is split: as the target."""
        return self.split(ds)

    def eligible_users(self, ds: Dataset, min_len: int) -> np.ndarray:
        """Users with at least `min_len` interactions (the first max_users of them, if set)."""
        users = np.flatnonzero(ds.lengths() >= min_len)
        if self.config.max_users is not None:
            users = users[: self.config.max_users]
        if len(users) == 0:
            raise BenchError(f"dataset {ds.name!r}: no user has the {min_len} interactions {self.name} needs")
        return users


PROTOCOLS: Registry[type[Protocol]] = Registry("protocol")


def cases_from_positions(ds: Dataset, users: np.ndarray, target_pos: np.ndarray) -> EvalCases:
    """Evaluation cases whose target is item `target_pos` (0-based, within the user's sequence)."""
    starts = ds.offsets[users]
    hist_len = target_pos
    offsets = np.concatenate([[0], np.cumsum(hist_len)]).astype(np.int64)
    take = np.repeat(starts - offsets[:-1], hist_len) + np.arange(offsets[-1])
    return EvalCases(users.astype(np.int64), ds.items[starts + target_pos], offsets, ds.items[take])
