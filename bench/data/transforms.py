"""Run-level data options (`--set data.<field>=...`): derived Datasets that keep the item catalogue.

`dedup=keep_last` is the MSM4SR authors' pipeline: repeated (user, item) rows are dropped keeping
the last occurrence, then users left with fewer than `min_user_interactions` are removed. Items
keep their ids (and so their features); the derived dataset gets its own content hash.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bench.data.dataset import Dataset
from bench.hashing import hash_obj


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dedup: Literal["none", "keep_last"] = "none"
    min_user_interactions: int = Field(5, ge=1, strict=True)  # re-applied after dedup


def _keep_last(seq: np.ndarray) -> np.ndarray:
    """Positions of the last occurrence of each item, in sequence order."""
    rev = seq[::-1]
    _, first_in_rev = np.unique(rev, return_index=True)
    return np.sort(len(seq) - 1 - first_in_rev)


def apply_data_options(ds: Dataset, cfg: DataConfig) -> Dataset:
    if cfg.dedup == "none":
        return ds
    keep_rows, user_rows, users = [], [], []
    for u in range(ds.n_users):
        lo = ds.offsets[u]
        rows = lo + _keep_last(ds.sequence(u))
        if len(rows) >= cfg.min_user_interactions:
            keep_rows.append(rows)
            users.append(ds.user_ids[u])
            user_rows.append(len(rows))
    rows = np.concatenate(keep_rows) if keep_rows else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(user_rows)]).astype(np.int64)
    removed = int(sum(len(ds.sequence(u)) - len(_keep_last(ds.sequence(u))) for u in range(ds.n_users)))
    out = Dataset(
        name=ds.name, item_ids=ds.item_ids, user_ids=users, offsets=offsets, items=ds.items[rows],
        timestamps=ds.timestamps[rows] if ds.timestamps is not None else None,
        item_text=ds.item_text, item_images=ds.item_images,
        meta={**ds.meta, "data_options": cfg.model_dump(), "base_hash": ds.content_hash,
              "repeated_rows_removed": removed},
        content_hash=hash_obj({"base": ds.content_hash, "data": cfg.model_dump()}),
    )
    out.validate()
    return out
