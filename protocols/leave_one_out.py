"""Chronological leave-one-out: last item is the test target, second last the validation target,
every earlier prefix is a training sample (histories truncated to max_len)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from bench.data.dataset import Dataset
from bench.errors import BenchError
from protocols.base import PROTOCOLS, Protocol, ProtocolConfig, Split, TrainSequences, cases_from_positions


class LeaveOneOutConfig(ProtocolConfig):
    min_len: int = Field(3, ge=3)  # one training target needs two training items plus valid and test


@PROTOCOLS.register("leave_one_out")
class LeaveOneOut(Protocol):
    name = "leave_one_out"
    Config = LeaveOneOutConfig
    split_note = False  # the standard split: its counts need no note under a table

    def definition(self) -> dict:
        return {
            **super().definition(),
            "valid_target": "second-last item of each user",
            "test_target": "last item of each user",
            "train_samples": "every prefix of the remaining items (history truncated to max_len)",
        }

    def split(self, ds: Dataset) -> Split:
        users = self.eligible_users(ds, self.config.min_len)
        lengths = ds.lengths()[users]
        train = train_prefix_sequences(ds, users, lengths - 2)
        if ds.timestamps is not None:
            check_no_future_training_events(ds, users, lengths)
        definition = {
            **self.definition(),
            "users": int(len(users)),
            "users_dropped_too_short": int(ds.n_users - len(users)),
            "train_targets": int((lengths - 3).sum()),
        }
        return Split(
            n_items=ds.n_items,
            train=train,
            valid=cases_from_positions(ds, users, lengths - 2),
            _test=cases_from_positions(ds, users, lengths - 1),
            definition=definition,
        )


def train_prefix_sequences(ds: Dataset, users: np.ndarray, keep: np.ndarray) -> TrainSequences:
    """The first `keep[i]` items of each user's sequence."""
    starts = ds.offsets[users]
    offsets = np.concatenate([[0], np.cumsum(keep)]).astype(np.int64)
    take = np.repeat(starts - offsets[:-1], keep) + np.arange(offsets[-1])
    return TrainSequences(offsets, ds.items[take])


def check_no_future_training_events(ds: Dataset, users: np.ndarray, lengths: np.ndarray) -> None:
    """Leakage guard for timestamped data: no training event is later than the user's
    validation event, and validation is not later than test."""
    all_lengths = ds.lengths()
    pos = np.arange(ds.n_interactions) - np.repeat(ds.offsets[:-1], all_lengths)
    in_train = pos < np.repeat(all_lengths - 2, all_lengths)
    ts = np.where(in_train, ds.timestamps.astype(np.float64), -np.inf)
    train_max = np.maximum.reduceat(ts, ds.offsets[:-1])[users]
    starts = ds.offsets[users]
    valid_t, test_t = ds.timestamps[starts + lengths - 2], ds.timestamps[starts + lengths - 1]
    bad = np.flatnonzero((train_max > valid_t) | (valid_t > test_t))
    if len(bad):
        raise BenchError(
            f"dataset {ds.name!r}: user {ds.user_ids[users[bad[0]]]} has a training event later than its "
            f"validation or test event ({len(bad)} users): sequences must be in time order"
        )
