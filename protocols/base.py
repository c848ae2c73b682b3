"""The protocol interface and the Split it produces.

A Split holds training sequences (CSR), validation and test evaluation cases and the
protocol's written definition. The test cases are locked until the caller unlocks them, so
tuning and model selection code cannot read test targets by accident.
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


@dataclass
class Split:
    n_items: int
    train: TrainSequences
    valid: EvalCases
    _test: EvalCases
    definition: dict[str, Any]
    test_unlocked: bool = field(default=False)
    train_classes: np.ndarray | None = None  # see ModelContext.train_classes (None: every item)

    @property
    def test(self) -> EvalCases:
        if not self.test_unlocked:
            raise BenchError(
                "test split is locked: only the final evaluation of a selected configuration may read it "
                "(call split.unlock_test() there, never in training or tuning code)"
            )
        return self._test

    def unlock_test(self) -> EvalCases:
        self.test_unlocked = True
        return self._test


class ProtocolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_len: int = Field(50, gt=0)
    max_users: int | None = Field(None, gt=0)  # keep only the first N users (quick runs and tests)
    candidates: str | None = Field(None, pattern=r"^(uni|pop)[1-9][0-9]*$")  # sampled mode: uni100, pop100
    candidates_seed: int = Field(0, ge=0)  # the candidate sets' own seed (never the model seed)


class Protocol:
    name: ClassVar[str]
    Config: ClassVar[type[ProtocolConfig]] = ProtocolConfig

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
