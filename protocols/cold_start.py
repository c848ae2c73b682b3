"""Cold-start protocols: new items, rare items and new users, as one protocol with three kinds.

`--protocol cold_start --set protocol.kind=item|long_tail|user` (default item). The split is
seeded by `protocol.seed` only (never by the model seed), so every model and seed of a table
sees the same split. Every kind writes its thresholds, seed and the users/items/cases it affects
into the definition, and stops with a one-line BenchError when it leaves fewer than `min_cases`
validation or test cases.

item (strict cold items)
    A seeded `item_fraction` of the item ids 1..n_items (uniform over ids, so cold items follow
    the item popularity distribution, mostly tail items) is held out. Every interaction with a
    cold item is removed from every training sequence, and with `new_items="absent"` (default)
    they are not classes of the training softmax either (`split.train_classes`): at training time
    they do not exist, so their ID embeddings keep their initial values. `new_items="negatives"`
    keeps them as negatives only, which pushes an ID model's scores for them below every warm item.
    Evaluation case of a user: the LAST cold-item interaction in their sequence; its history is
    the user's earlier WARM interactions in order (earlier cold interactions are removed from the
    history too: their ids are unseen, and an ID model would read untrained embeddings). Users
    whose last cold interaction has no warm interaction before it get no case (counted).
    The users with a case are split by the seed into two disjoint halves: validation users
    (floor(n/2)) and test users (the rest).
    Training: every user's sequence with cold items removed; an evaluated user's sequence is cut
    at their target, i.e. their training sequence is exactly their evaluation history (nothing
    after the evaluated interaction is trained on). Empty training sequences are dropped.

long_tail
    Exactly the leave_one_out split (nothing removed; last item = test, second last = valid).
    Test cases are restricted to those whose target has at most `tail_max_count` occurrences in
    the training sequences (0 included: items never seen in training). Validation stays on all
    users, so training and model selection are those of leave_one_out and the only change is
    which test cases are scored. The unrestricted test cases travel with the split as
    `split.test_sets()["all"]` (the all-users figure to print beside it).

user (new users)
    A seeded `user_fraction` of the eligible users (those with >= user_history + 1 interactions)
    are cold users, split by the seed into disjoint validation (floor(n/2)) and test halves.
    A cold user's case: target = their last item, history = only the `user_history` items
    (k in {1, 2, 3}) just before it. Cold users contribute NOTHING to training (also not their
    early interactions: otherwise the model would have trained on the very user it is asked to
    treat as new). Every other user trains on their full sequence (they have no evaluation case,
    so nothing of theirs needs holding back). `split.test_sets()["full_history"]` holds the same
    test cases with the full history before the target (same model, same targets: the cost of
    having only k items).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from bench.data.dataset import Dataset
from bench.errors import BenchError
from bench.hashing import hash_obj
from protocols.base import (
    PROTOCOLS,
    EvalCases,
    Protocol,
    ProtocolConfig,
    Split,
    TrainSequences,
    cases_from_positions,
)
from protocols.leave_one_out import LeaveOneOut, LeaveOneOutConfig

KINDS = ("item", "long_tail", "user")
_KIND_FIELDS = {
    "item": ("seed", "item_fraction", "new_items"),
    "long_tail": ("tail_max_count",),  # deterministic: no seed
    "user": ("seed", "user_fraction", "user_history"),
}
_STREAM = {"item": 1, "long_tail": 2, "user": 3}  # separate random streams per kind


class ColdStartConfig(ProtocolConfig):
    kind: Literal["item", "long_tail", "user"] = "item"
    seed: int = Field(0, ge=0)  # the split's own seed: independent of the model/run seed
    min_cases: int = Field(100, ge=1)  # fewer validation or test cases than this is an error
    item_fraction: float = Field(0.1, gt=0, lt=1)  # item: share of item ids held out
    tail_max_count: int = Field(5, ge=0)  # long_tail: max training occurrences of a test target
    user_fraction: float = Field(0.2, gt=0, lt=1)  # user: share of eligible users held out (valid + test)
    user_history: Literal[1, 2, 3] = 2  # user: history items a cold user keeps
    # item: "absent" = held-out items do not exist at training time (neither targets nor softmax
    # negatives, so ID models rank them at chance); "negatives" = they stay in the training softmax
    # as negatives only (CE then pushes every ID embedding of theirs below the warm items)
    new_items: Literal["absent", "negatives"] = "absent"


@PROTOCOLS.register("cold_start")
class ColdStart(Protocol):
    name = "cold_start"
    Config = ColdStartConfig

    def definition(self) -> dict[str, Any]:
        """Every config field (base fields included) except the other kinds' thresholds."""
        cfg = self.config
        other = {f for kind, fields in _KIND_FIELDS.items() if kind != cfg.kind for f in fields}
        other -= set(_KIND_FIELDS[cfg.kind])
        values = {k: v for k, v in cfg.model_dump().items() if k not in other}
        return {"protocol": self.name, **values, "rule": RULES[cfg.kind]}

    def split(self, ds: Dataset) -> Split:
        return {"item": self._item, "long_tail": self._long_tail, "user": self._user}[self.config.kind](ds)

    # ---- kinds -------------------------------------------------------------------------------

    def _rng(self) -> np.random.Generator:
        return kind_rng(self.config.seed, self.config.kind)

    def cold_items(self, ds: Dataset) -> np.ndarray:
        """The held-out item ids of kind=item (sorted), as `split` draws them."""
        return cold_item_ids(ds.n_items, self.config.item_fraction, kind_rng(self.config.seed, "item"))

    def _item(self, ds: Dataset) -> Split:
        cfg, rng = self.config, self._rng()
        users = self.eligible_users(ds, 2)
        cold_items = cold_item_ids(ds.n_items, cfg.item_fraction, rng)
        n_cold = len(cold_items)
        is_cold = np.zeros(ds.n_items + 1, dtype=bool)
        is_cold[cold_items] = True

        flat = _Flat(ds, users)
        cold = is_cold[flat.items]
        n = len(users)
        target_pos = np.full(n, -1, dtype=np.int64)
        np.maximum.at(target_pos, flat.row[cold], flat.pos[cold])
        affected = target_pos >= 0
        # warm interactions before each user's last cold interaction = the case's history
        before = (~cold) & (flat.pos < target_pos[flat.row])
        hist_len = np.bincount(flat.row[before], minlength=n)
        has_case = affected & (hist_len >= 1)

        case_rows = np.flatnonzero(has_case)
        perm = rng.permutation(case_rows)
        n_valid = len(perm) // 2
        valid_rows, test_rows = np.sort(perm[:n_valid]), np.sort(perm[n_valid:])

        keep = ~cold & (~has_case[flat.row] | (flat.pos < target_pos[flat.row]))
        train = flat.train(keep)
        targets = flat.items_at(target_pos)
        valid = flat.cases(valid_rows, targets[valid_rows], keep)
        test = flat.cases(test_rows, targets[test_rows], keep)
        warm_total = int((~cold).sum())
        definition = {
            **self.definition(),
            "users": int(n),
            "items": int(ds.n_items),
            "cold_items": int(n_cold),
            "cold_items_sha": hash_obj(cold_items.tolist()),
            "cold_interactions_removed": int(cold.sum()),
            "affected_users": int(affected.sum()),
            "affected_users_without_warm_history": int((affected & ~has_case).sum()),
            "warm_interactions_after_target_removed": int(warm_total - keep.sum()),
            "train_interactions": int(len(train.items)),
            "train_sequences": int(len(train)),
            "valid_cases": int(len(valid)),
            "test_cases": int(len(test)),
            "test_target_items": int(len(np.unique(test.targets))),
        }
        self._check(ds, definition)
        classes = ~is_cold if cfg.new_items == "absent" else None
        return Split(ds.n_items, train, valid, test, definition, train_classes=classes)

    def _long_tail(self, ds: Dataset) -> Split:
        cfg = self.config
        loo = LeaveOneOut(LeaveOneOutConfig(max_len=cfg.max_len, max_users=cfg.max_users)).split(ds)
        counts = loo.train.item_counts(ds.n_items)
        full_test = loo.unlock_test()
        rows = np.flatnonzero(counts[full_test.targets] <= cfg.tail_max_count)
        test = full_test.subset(rows)
        tail_items = int((counts[1:] <= cfg.tail_max_count).sum())
        definition = {
            **self.definition(),
            "users": int(len(full_test)),
            "items": int(ds.n_items),
            "tail_items": tail_items,  # items with <= tail_max_count training occurrences
            "unseen_items": int((counts[1:] == 0).sum()),
            "train_interactions": int(len(loo.train.items)),
            "valid_cases": int(len(loo.valid)),
            "valid": "all users (as leave_one_out)",
            "test_cases_all": int(len(full_test)),
            "test_cases": int(len(test)),
            "affected_users": int(len(test)),
            "test_target_items": int(len(np.unique(test.targets))),
            "test_targets_unseen": int((counts[test.targets] == 0).sum()),
        }
        self._check(ds, definition)
        return Split(ds.n_items, loo.train, loo.valid, test, definition, _extra_test={"all": full_test})

    def _user(self, ds: Dataset) -> Split:
        cfg, rng = self.config, self._rng()
        k = cfg.user_history
        users = self.eligible_users(ds, k + 1)
        n_cold = int(round(cfg.user_fraction * len(users)))
        perm = rng.permutation(len(users))
        cold_rows = perm[:n_cold]
        n_valid = n_cold // 2
        valid_users, test_users = np.sort(users[cold_rows[:n_valid]]), np.sort(users[cold_rows[n_valid:]])
        is_cold = np.zeros(len(users), dtype=bool)
        is_cold[cold_rows] = True

        flat = _Flat(ds, users)
        keep = ~is_cold[flat.row]
        train = flat.train(keep)
        lengths = ds.lengths()
        valid = last_k_cases(ds, valid_users, k)
        test = last_k_cases(ds, test_users, k)
        full_history = cases_from_positions(ds, test_users, lengths[test_users] - 1)
        counts_all = np.bincount(flat.items, minlength=ds.n_items + 1)
        counts_train = train.item_counts(ds.n_items)
        definition = {
            **self.definition(),
            "users": int(len(users)),
            "items": int(ds.n_items),
            "cold_users": int(n_cold),
            "affected_users": int(n_cold),
            "interactions_removed": int((~keep).sum()),
            # items that occur only in cold users' sequences: no model trains on them
            "affected_items": int(((counts_all > 0) & (counts_train == 0)).sum()),
            "train_interactions": int(len(train.items)),
            "train_sequences": int(len(train)),
            "valid_cases": int(len(valid)),
            "test_cases": int(len(test)),
            "test_targets_unseen": int((counts_train[test.targets] == 0).sum()),
        }
        self._check(ds, definition)
        return Split(ds.n_items, train, valid, test, definition, _extra_test={"full_history": full_history})

    def _check(self, ds: Dataset, definition: dict) -> None:
        cfg = self.config
        for part in ("valid", "test"):
            n = definition[f"{part}_cases"]
            if n < cfg.min_cases:
                knob = {"item": "raise protocol.item_fraction", "long_tail": "raise protocol.tail_max_count",
                        "user": "raise protocol.user_fraction"}[cfg.kind]
                raise BenchError(
                    f"cold_start kind={cfg.kind} on {ds.name!r} leaves {n} {part} cases (< min_cases={cfg.min_cases}): "
                    f"{knob}, use more users, or lower protocol.min_cases"
                )


RULES = {
    "item": ("held-out item ids removed from all training; case = each user's last cold interaction, history = "
             "earlier warm interactions; valid/test users disjoint (seeded halves); eval users trained up to their target"),
    "long_tail": ("leave_one_out split; test restricted to targets with <= tail_max_count training occurrences; "
                  "valid on all users; extra test 'all' = every user"),
    "user": ("seeded cold users (valid/test halves) keep only their last user_history items before their last item; "
             "cold users contribute nothing to training; others train on full sequences; extra test 'full_history'"),
}


def kind_rng(seed: int, kind: str) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAM[kind]])


def cold_item_ids(n_items: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """round(fraction * n_items) (at least 1) distinct item ids, uniform over 1..n_items, sorted.
    Drawn first from the kind's generator, so they depend only on (seed, n_items, fraction)."""
    n_cold = max(1, int(round(fraction * n_items)))
    return np.sort(rng.choice(np.arange(1, n_items + 1), size=n_cold, replace=False))


class _Flat:
    """The selected users' interactions as flat arrays: row (index into users), position, item."""

    def __init__(self, ds: Dataset, users: np.ndarray):
        lengths = ds.lengths()[users]
        starts = ds.offsets[users]
        local = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.n = len(users)
        self.users = users
        self.row = np.repeat(np.arange(self.n), lengths)
        self.pos = np.arange(local[-1]) - local[:-1][self.row]
        self.items = ds.items[starts[self.row] + self.pos]
        self._local = local

    def items_at(self, pos: np.ndarray) -> np.ndarray:
        """Item at position pos[r] of each row's sequence (0 where pos < 0)."""
        out = np.zeros(self.n, dtype=np.int64)
        ok = pos >= 0
        out[ok] = self.items[self._local[:-1][ok] + pos[ok]]
        return out

    def train(self, keep: np.ndarray) -> TrainSequences:
        lengths = np.bincount(self.row[keep], minlength=self.n)
        lengths = lengths[lengths > 0]  # rows are in order, so dropping empties keeps CSR aligned
        return TrainSequences(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                              self.items[keep].astype(np.int64))

    def cases(self, rows: np.ndarray, targets: np.ndarray, hist_mask: np.ndarray) -> EvalCases:
        """Cases for `rows` whose history is the row's interactions under `hist_mask`, in order."""
        selected = np.zeros(self.n, dtype=bool)
        selected[rows] = True
        m = hist_mask & selected[self.row]
        hist_len = np.bincount(self.row[m], minlength=self.n)[rows]
        offsets = np.concatenate([[0], np.cumsum(hist_len)]).astype(np.int64)
        return EvalCases(self.users[rows].astype(np.int64), targets.astype(np.int64), offsets,
                         self.items[m].astype(np.int64))


def last_k_cases(ds: Dataset, users: np.ndarray, k: int) -> EvalCases:
    """Target = each user's last item; history = the k items before it."""
    ends = ds.offsets[users + 1] - 1  # index of the target
    hist_len = np.minimum(k, ends - ds.offsets[users])
    offsets = np.concatenate([[0], np.cumsum(hist_len)]).astype(np.int64)
    take = np.repeat(ends - hist_len - offsets[:-1], hist_len) + np.arange(offsets[-1])
    return EvalCases(users.astype(np.int64), ds.items[ends], offsets, ds.items[take])
