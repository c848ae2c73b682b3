"""Interactions of a raw dump held as integer columns while they stream in, then de-duplicated,
k-core filtered and ordered with numpy.

A full Amazon category has tens of millions of lines; a Python dict of (user, item) tuples costs
~250 bytes per line, the columns here 24 bytes per line plus one string per distinct user/item.
"""

from __future__ import annotations

from array import array

import numpy as np


class InteractionLog:
    """Append-only (user, item, time, line) columns; user/item strings coded in order of appearance."""

    def __init__(self) -> None:
        self.user_code: dict[str, int] = {}
        self.item_code: dict[str, int] = {}
        self._cols = {"user": array("i"), "item": array("i"), "time": array("q"), "line": array("q")}

    def add(self, user: str, item: str, time: int, line: int) -> None:
        c = self._cols
        c["user"].append(self.user_code.setdefault(user, len(self.user_code)))
        c["item"].append(self.item_code.setdefault(item, len(self.item_code)))
        c["time"].append(time)
        c["line"].append(line)

    def __len__(self) -> int:
        return len(self._cols["user"])

    def columns(self) -> dict[str, np.ndarray]:
        return {k: np.frombuffer(v, dtype=v.typecode) for k, v in self._cols.items()}  # views, no copy

    def names(self, kind: str) -> np.ndarray:
        """Strings by code (dicts keep insertion order, which is code order)."""
        codes = self.user_code if kind == "user" else self.item_code
        return np.array(list(codes), dtype=object)


def keep_last(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Row indices keeping, for each (user, item) pair, its latest interaction (ties: later line)."""
    order = np.lexsort((cols["line"], cols["time"], cols["item"], cols["user"]))
    u, i = cols["user"][order], cols["item"][order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    return order[last]


def k_core_mask(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Rows left after dropping users and items with fewer than k rows, repeated until stable."""
    keep = np.ones(len(users), dtype=bool)
    while True:
        per_user = np.bincount(users[keep], minlength=int(users.max(initial=-1)) + 1)
        per_item = np.bincount(items[keep], minlength=int(items.max(initial=-1)) + 1)
        smaller = keep & (per_user[users] >= k) & (per_item[items] >= k)
        if smaller.sum() == keep.sum():
            return keep
        keep = smaller


def sorted_ids(codes: np.ndarray, names: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Dense ids 1..n for the codes present, numbered in sorted name order (ids are then independent
    of file order). Returns (code -> id lookup, names by id - 1)."""
    present = np.unique(codes)
    by_name = sorted(present.tolist(), key=lambda c: names[c])
    lookup = np.zeros(len(names), dtype=np.int64)
    lookup[by_name] = np.arange(1, len(by_name) + 1)
    return lookup, [names[c] for c in by_name]
