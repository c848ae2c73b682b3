"""The canonical processed form of one domain, shared by every reader, protocol and model.

Items have internal ids 1..n_items (0 is the padding item, never ranked); sequences are kept in
CSR form (one flat item array plus offsets) so large datasets stay compact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bench.errors import BenchError


@dataclass
class Dataset:
    name: str
    item_ids: list[str]  # external id (e.g. ASIN) of internal item i+1
    user_ids: list[str]
    offsets: np.ndarray  # int64, len n_users + 1
    items: np.ndarray  # int64 internal item ids, users' sequences concatenated in time order
    timestamps: np.ndarray | None = None  # aligned with `items` when the source has them
    item_text: list[list[str]] | None = None  # text segments per item (index i -> item i+1)
    item_images: list[list[str]] | None = None  # image references per item (paths or URLs)
    meta: dict = field(default_factory=dict)
    content_hash: str = ""

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(self.items.shape[0])

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def validate(self) -> None:
        if self.n_users == 0 or self.n_interactions == 0:
            raise BenchError(f"dataset {self.name!r} is empty (no users or interactions)")
        if self.offsets[0] != 0 or self.offsets[-1] != self.n_interactions:
            raise BenchError(f"dataset {self.name!r}: offsets do not cover the item array")
        if self.items.min() < 1 or self.items.max() > self.n_items:
            raise BenchError(f"dataset {self.name!r}: item ids outside 1..{self.n_items}")


def from_sequences(name: str, item_ids: list[str], user_ids: list[str], seqs: list[np.ndarray], **kw) -> Dataset:
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.concatenate(seqs).astype(np.int64) if seqs else np.zeros(0, np.int64)
    return Dataset(name=name, item_ids=item_ids, user_ids=user_ids, offsets=offsets, items=items, **kw)
